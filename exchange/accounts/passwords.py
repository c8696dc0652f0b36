"""Default passwords: the demo's published password is nobody's real password.

- ``DefaultPasswordValidator`` (in AUTH_PASSWORD_VALIDATORS) refuses it, and
  the configured demo password, whenever someone chooses a password.
- ``default_password_users`` finds active accounts that still have it (the
  demo loader sets it without validation): production refuses to start the
  web server while there is one (``exchange.server``), and
  ``manage.py check --deploy --database default`` reports them
  (``exchange.E010``).
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Error, Tags, register
from django.core.exceptions import ValidationError

DEMO_PASSWORD_DEFAULT = "demo-exchange-2026"


def refused_passwords() -> set[str]:
    return {DEMO_PASSWORD_DEFAULT, settings.EXCHANGE_DEMO_PASSWORD}


class DefaultPasswordValidator:
    def validate(self, password, user=None):
        if password in refused_passwords():
            raise ValidationError("This is the demo's published password; choose another.", code="password_default")

    def get_help_text(self) -> str:
        return "Your password cannot be the demo's published password."


def default_password_users() -> list[str]:
    """Usernames of active accounts whose password is a refused one: the demo's users and every staff
    member are checked (one password hash computation per account and refused password)."""
    from django.contrib.auth import get_user_model
    from django.db.models import Q

    from exchange.demo import DEMO_USERS

    candidates = get_user_model().objects.filter(is_active=True).filter(
        Q(username__in=[spec.username for spec in DEMO_USERS]) | Q(is_staff=True) | Q(is_superuser=True))
    passwords = refused_passwords()
    return sorted(user.username for user in candidates.order_by("id")
                  if any(user.check_password(password) for password in passwords))


@register(Tags.security, deploy=True)
def default_passwords_check(app_configs=None, databases=None, **kwargs):
    """exchange.E010 (with ``--database``): an active account still has the demo's password."""
    if not databases:
        return []
    users = default_password_users()
    if not users:
        return []
    return [Error(f"Active accounts still have the demo's published password: {', '.join(users)}.",
                  hint="Set new passwords (manage.py changepassword USERNAME) or deactivate them.", id="exchange.E010")]


class PasswordChangeEndsSessions:
    """A new password closes the user's live connections opened with a session.

    Listed in AUTH_PASSWORD_VALIDATORS for Django's ``password_changed`` call,
    made whatever door the password is set through (it accepts every
    password). Django refuses the other sessions' next requests by itself,
    but a WebSocket they opened would go on receiving private data; it is
    closed (exchange/live/control.py), and the browser that changed the
    password reconnects with its kept session. Connections authenticated
    with an API key stay: a key is its own credential.
    """

    def validate(self, password, user=None):
        return None

    def get_help_text(self) -> str:
        return "Changing your password signs your other browser sessions out."

    def password_changed(self, password, user=None):
        if user is None or user.pk is None:
            return
        from exchange.live.control import connections_close_on_commit

        connections_close_on_commit(user_id=user.pk, reason="password changed", sessions_only=True)
