"""Failed sign-ins lock out a username from an address for a while (django-axes).

Both sign-in doors (the back office's form, ``POST /api/v1/auth/login``) call
``django.contrib.auth.authenticate``; its first backend, axes', refuses a
(username, address) pair that failed ``AXES_FAILURE_LIMIT`` times within
``AXES_COOLOFF_TIME``, and every failure (a wrong password, a wrong TOTP code,
a failed step-up: ``user_login_failed``) counts. Usernames are counted by
their normalized key, so "Alice" and "alice" share a counter. A success
clears the pair's failures.

Nothing runs on requests that do not sign in: there is no middleware; the
two views read ``login_locked_out(request)`` after ``authenticate`` returned
None and answer 429 ``LOGIN_LOCKED_OUT`` (API) or a form error (back office).
Operators see lockouts in the back office and lift them with a reason
(``login_lockouts_reset``, audited ``LOGIN_LOCKOUT_RESET``).
"""

from __future__ import annotations

from django.conf import settings
from django.db import transaction

from exchange.accounts.usernames import username_key
from exchange.audit import actions
from exchange.audit.services import audit_log_record, audit_origin


def lockout_username(request, credentials) -> str | None:
    """AXES_USERNAME_CALLABLE: the attempted name as the lockout counts it."""
    username = (credentials or {}).get("username")
    return username_key(str(username))[:150] if username else None


def login_locked_out(request) -> bool:
    """Whether the sign-in attempt on ``request`` (a Django HttpRequest) was refused by the lockout."""
    return bool(getattr(request, "axes_locked_out", False))


def lockout_message() -> str:
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    return (f"Too many failed sign-ins for this account from your address: try again in {minutes} minutes, "
            "or ask an operator to lift the lockout.")


@transaction.atomic
def login_lockouts_reset(*, attempts, actor, reason: str, audit: dict | None = None) -> int:
    """Delete the failure records ``attempts`` (an AccessAttempt queryset); returns how many."""
    from exchange.core.errors import ApplicationError

    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError("REASON_REQUIRED", "Say why the lockout is lifted.", field="reason")
    rows = list(attempts.select_for_update().order_by("id"))
    for attempt in rows:
        audit_log_record(action=actions.LOGIN_LOCKOUT_RESET, object_type="axes.accessattempt", object_id=attempt.pk,
                         before={"username": attempt.username, "ip": attempt.ip_address,
                                 "failures": attempt.failures_since_start},
                         after={"reason": reason}, **audit_origin(audit, staff=actor))
    attempts.model.objects.filter(pk__in=[attempt.pk for attempt in rows]).delete()
    return len(rows)
