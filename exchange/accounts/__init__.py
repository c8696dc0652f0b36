"""End users: registration, session login/logout, the current user."""
