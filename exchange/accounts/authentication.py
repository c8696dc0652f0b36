"""Session authentication for the browser, with DRF's CSRF enforcement and a stable error code."""

from __future__ import annotations

from rest_framework import authentication, exceptions


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
    """DRF's session authentication: unsafe methods of a logged-in session need a CSRF token."""

    def enforce_csrf(self, request):
        enforce_csrf(request)
