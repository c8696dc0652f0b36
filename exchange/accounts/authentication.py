"""Session authentication for the browser, with DRF's CSRF enforcement and a stable error code.

A staff member's session counts only once it passed the second factor
(``exchange.accounts.twofactor.session_verified``): a password alone opens
no staff session, in the API as in the back office.
"""

from __future__ import annotations

from rest_framework import authentication, exceptions

from exchange.accounts.twofactor import session_verified


def csrf_failure_reason(request) -> str | None:
    """Why Django's CSRF check refuses ``request`` (a Django HttpRequest), or None when it passes."""
    check = authentication.CSRFCheck(lambda _request: None)
    check.process_request(request)  # reads the CSRF cookie into request.META
    return check.process_view(request, None, (), {})


def enforce_csrf(request) -> None:
    """Raise 403 CSRF_FAILED unless the request carries a valid CSRF token."""
    reason = csrf_failure_reason(request)
    if reason:
        raise exceptions.PermissionDenied(
            f"CSRF Failed: {reason}. Get a token from GET /api/v1/auth/csrf and send it as X-CSRFToken.",
            code="CSRF_FAILED",
        )


class SessionAuthentication(authentication.SessionAuthentication):
    """DRF's session authentication: unsafe methods of a logged-in session need a CSRF token;
    staff sessions need the second factor (401 OTP_REQUIRED)."""

    def authenticate(self, request):
        result = super().authenticate(request)
        if result is not None and (result[0].is_staff or result[0].is_superuser) \
                and not session_verified(request._request):
            raise exceptions.AuthenticationFailed(
                "Staff sessions need two-factor authentication: sign in again with your authenticator code.",
                code="OTP_REQUIRED")
        return result

    def enforce_csrf(self, request):
        enforce_csrf(request)
