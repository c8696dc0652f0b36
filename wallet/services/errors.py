"""Refusals shared by the wallet's staff-facing services."""

from exchange.core.errors import ApplicationError


def own_account() -> ApplicationError:
    """A staff member moving money on their own account (403 OWN_ACCOUNT)."""
    return ApplicationError("OWN_ACCOUNT", "Staff may not move money on their own account.", status_code=403)
