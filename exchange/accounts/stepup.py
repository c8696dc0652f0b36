"""Step-up: proving again who you are before an action that can move money out.

Requesting a withdrawal with a session and creating an API key that may
withdraw need it: the authenticator code (``otp``) when the user has turned
two-factor authentication on, otherwise the account's password
(``password``). A stolen session cookie alone is then not enough to send
funds away. A failure counts as a failed sign-in (audited ``LOGIN_FAILED``,
and towards the lockout of ``exchange.accounts.lockout``); while locked out,
step-up is refused too.

A request signed with an API key needs no step-up: a key can withdraw only if
its owner created it with step-up, and only from the networks of its IP
allowlist.
"""

from __future__ import annotations

from axes.handlers.proxy import AxesProxyHandler
from django.contrib.auth import authenticate

from exchange.accounts.lockout import lockout_message, login_locked_out
from exchange.accounts.twofactor import totp_device, totp_verify
from exchange.core.errors import ApplicationError

OTP = "otp"
PASSWORD = "password"


def step_up_verify(*, request, user, password: str | None = None, otp: str | None = None) -> str:
    """Check the step-up of ``user`` on ``request`` (a Django HttpRequest); returns the method used.

    Errors: 403 STEP_UP_REQUIRED (``field`` says what to send), 400 INVALID_OTP or
    INVALID_PASSWORD, 429 LOGIN_LOCKED_OUT.
    """
    credentials = {"username": user.get_username()}
    if AxesProxyHandler.is_locked(request, credentials):
        raise ApplicationError("LOGIN_LOCKED_OUT", lockout_message(), status_code=429)
    if totp_device(user) is not None:
        if not otp:
            raise ApplicationError("STEP_UP_REQUIRED", "Confirm with the code from your authenticator app (otp).",
                                   field=OTP, status_code=403)
        totp_verify(user=user, token=otp, request=request)
        return OTP
    if not password:
        raise ApplicationError("STEP_UP_REQUIRED", "Confirm with your password (password).", field=PASSWORD,
                               status_code=403)
    if authenticate(request, username=user.get_username(), password=password) is None:
        if login_locked_out(request):
            raise ApplicationError("LOGIN_LOCKED_OUT", lockout_message(), status_code=429)
        raise ApplicationError("INVALID_PASSWORD", "The password is wrong.", field=PASSWORD)
    return PASSWORD
