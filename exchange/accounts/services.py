"""Writes of end-user accounts."""

from __future__ import annotations

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

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

    Usernames and e-mail addresses are unique regardless of case, so that
    "Alice" cannot pose as "alice". Errors: USERNAME_TAKEN, EMAIL_TAKEN, and
    one PASSWORD_* code per failed validator (PASSWORD_TOO_SHORT,
    PASSWORD_TOO_COMMON, PASSWORD_ENTIRELY_NUMERIC, PASSWORD_TOO_SIMILAR),
    all listed under ``errors``.
    """
    User = get_user_model()
    if User.objects.filter(username__iexact=username).exists():
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
