"""Sign-ins, sign-outs and failed sign-ins in the audit trail (LOGIN, LOGOUT, LOGIN_FAILED).

Django's authentication signals are the one place every door meets: the
API's login and logout, the back office's login page and whatever comes
next (2FA, lockout) all go through ``django.contrib.auth`` login(),
logout() and authenticate(). The receivers only translate the signal into
an ``audit_log_record`` call. Connected in ``ExchangeConfig.ready``.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from exchange.audit import actions
from exchange.audit.services import audit_context, audit_log_record, audit_origin

USERNAME_LENGTH_MAX = 150


def _context(request, user) -> dict:
    """The request's context with ``user`` as the actor (the request's own user may be gone or not set yet)."""
    context = audit_context(request) if request is not None else {}
    for key in ("actor_user", "actor_api_key", "actor_staff"):
        context.pop(key, None)
    return audit_origin(context, staff=user if user.is_staff else None, user=user)


@receiver(user_logged_in, dispatch_uid="exchange.audit.login")
def _logged_in(sender, request, user, **kwargs):
    audit_log_record(action=actions.LOGIN, object_type="auth.user", object_id=user.pk, subject_user=user,
                     **_context(request, user))


@receiver(user_logged_out, dispatch_uid="exchange.audit.logout")
def _logged_out(sender, request, user, **kwargs):
    if user is None:  # signing out without a session changes nothing
        return
    audit_log_record(action=actions.LOGOUT, object_type="auth.user", object_id=user.pk, subject_user=user,
                     **_context(request, user))


@receiver(user_login_failed, dispatch_uid="exchange.audit.login_failed")
def _login_failed(sender, credentials, request=None, **kwargs):
    username = str(credentials.get("username") or "")[:USERNAME_LENGTH_MAX]
    User = get_user_model()
    user_id = User.objects.filter(username__iexact=username).values_list("pk", flat=True).first() if username else None
    context = audit_context(request) if request is not None else {}
    audit_log_record(action=actions.LOGIN_FAILED, object_type="auth.user", object_id=user_id or "",
                     subject_user=user_id, after={"username": username},
                     **audit_origin(context, system="anonymous"))
