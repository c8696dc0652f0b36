"""Writes of user accounts: registration, and what staff do to an account (deactivate,
reactivate, cancel its orders, reset its authenticator)."""

from __future__ import annotations

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from exchange.accounts.usernames import username_clash
from exchange.audit import actions
from exchange.audit.services import audit_log_record, audit_origin
from exchange.core.errors import ApplicationError, error_body


def _password_code(django_code: str | None) -> str:
    """Django's validator code as ours: password_too_short -> PASSWORD_TOO_SHORT."""
    code = (django_code or "invalid").upper()
    return code if code.startswith("PASSWORD_") else f"PASSWORD_{code}"


def _password_errors(password: str, user) -> list[dict]:
    try:
        password_validation.validate_password(password, user=user)
    except ValidationError as exc:
        return [
            error_body(_password_code(error.code), message, "password")
            for error, message in zip(exc.error_list, exc.messages)
        ]
    return []


@transaction.atomic
def user_register(*, username: str, email: str, password: str, audit: dict | None = None):
    """A new active user; the password must pass AUTH_PASSWORD_VALIDATORS.

    Usernames are unique after Unicode normalization and regardless of case
    (``exchange.accounts.usernames``), e-mail addresses regardless of case,
    so that "Alice" or "ａｌｉｃｅ" cannot pose as "alice". Errors: USERNAME_TAKEN, EMAIL_TAKEN, and
    one PASSWORD_* code per failed validator (PASSWORD_TOO_SHORT,
    PASSWORD_TOO_COMMON, PASSWORD_ENTIRELY_NUMERIC, PASSWORD_TOO_SIMILAR),
    all listed under ``errors``.
    """
    User = get_user_model()
    if username_clash(username) is not None:
        raise ApplicationError("USERNAME_TAKEN", "This username is already taken.", field="username")
    if User.objects.filter(email__iexact=email).exists():
        raise ApplicationError("EMAIL_TAKEN", "An account with this e-mail address already exists.", field="email")
    errors = _password_errors(password, User(username=username, email=email))
    if errors:
        first = errors[0]
        raise ApplicationError(first["code"], first["message"], field="password", extra={"errors": errors})
    try:
        with transaction.atomic():
            user = User.objects.create_user(username=username, email=email, password=password)
    except IntegrityError:
        # A concurrent registration took the same username first.
        raise ApplicationError("USERNAME_TAKEN", "This username is already taken.", field="username") from None
    audit_log_record(action=actions.USER_REGISTER, object_type="auth.user", object_id=user.pk,
                     after={"username": user.username, "email": user.email}, subject_user=user,
                     **audit_origin(audit, user=user))
    return user


def user_orders_cancel(*, user, audit: dict | None = None) -> tuple[int, list[str]]:
    """Ask every market's matcher to cancel all of ``user``'s open orders (a CANCEL_ORDER audit row
    each, naming who asked). Returns how many were flagged, and the markets where nothing could be
    (a halted market takes no cancels: its orders stay until it resumes)."""
    from orders.models import OPEN_STATUSES, Order
    from orders.services import orders_cancel_all

    symbols = sorted(set(Order.objects.filter(user=user, status__in=OPEN_STATUSES)
                         .values_list("market__symbol", flat=True)))
    flagged, refused = 0, []
    for symbol in symbols:
        try:
            flagged += orders_cancel_all(user=user, symbol=symbol, audit=audit)
        except ApplicationError as error:
            refused.append(f"{symbol}: {error.message}")
    return flagged, refused


def _staff_may_manage(actor, user) -> None:
    """Staff act on other accounts only; only superusers act on staff accounts."""
    if actor.pk == user.pk:
        raise ApplicationError("OWN_ACCOUNT", "Staff may not do this to their own account.", status_code=403)
    if (user.is_staff or user.is_superuser) and not actor.is_superuser:
        raise ApplicationError("PERMISSION_DENIED", "Only a superuser may do this to a staff account.",
                               status_code=403)


@transaction.atomic
def user_deactivate(*, user, actor, reason: str, audit: dict | None = None) -> tuple[int, list[str]]:
    """Deactivate ``user``: sign-ins, sessions and API keys stop working (every process drops the
    user's cached credentials within a quarter second of the commit), live connections close, and
    every open order is cancelled. Returns ``user_orders_cancel``'s answer. Audited USER_DEACTIVATE."""
    from exchange.live.control import connections_close_on_commit

    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError("REASON_REQUIRED", "Say why the user is deactivated.", field="reason")
    _staff_may_manage(actor, user)
    User = get_user_model()
    locked = User.objects.select_for_update().get(pk=user.pk)
    if locked.is_active:
        locked.is_active = False
        locked.save(update_fields=["is_active"])
        audit_log_record(action=actions.USER_DEACTIVATE, object_type="auth.user", object_id=locked.pk,
                         subject_user=locked, before={"is_active": True}, after={"is_active": False, "reason": reason},
                         **audit_origin(audit, staff=actor))
    connections_close_on_commit(user_id=locked.pk, reason="account deactivated")
    return user_orders_cancel(user=locked, audit=audit_origin(audit, staff=actor))


@transaction.atomic
def user_reactivate(*, user, actor, reason: str, audit: dict | None = None) -> None:
    """Let a deactivated user sign in again (audited USER_REACTIVATE)."""
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError("REASON_REQUIRED", "Say why the user is reactivated.", field="reason")
    _staff_may_manage(actor, user)
    locked = get_user_model().objects.select_for_update().get(pk=user.pk)
    if not locked.is_active:
        locked.is_active = True
        locked.save(update_fields=["is_active"])
        audit_log_record(action=actions.USER_REACTIVATE, object_type="auth.user", object_id=locked.pk,
                         subject_user=locked, before={"is_active": False}, after={"is_active": True, "reason": reason},
                         **audit_origin(audit, staff=actor))


@transaction.atomic
def user_totp_reset(*, user, actor, reason: str, audit: dict | None = None) -> int:
    """Remove a user's authenticator (a lost phone): they enroll again at their next sign-in
    (staff) or may (traders). Audited TOTP_DISABLE with the reason."""
    from exchange.accounts.twofactor import totp_disable

    _staff_may_manage(actor, user)
    return totp_disable(user=user, actor=actor, reason=reason, audit=audit)
