"""The back office: the admin site with two-factor sign-in, the operators' dashboard, display helpers."""
