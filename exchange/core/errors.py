"""User errors with stable codes, and how the API renders every error.

Every error response of the API is JSON ``{"code", "message", "field"}``:
``code`` is a stable UPPER_SNAKE identifier clients can branch on, ``message``
is for humans, ``field`` names the offending input (dotted for nested
input, ``null`` when the error is not about one field). Validation errors
also list every problem under ``errors``. Bad input is a 4xx, a dependency
that is down is a 503 ``SERVICE_UNAVAILABLE``; nothing a client sends may
produce a 500.
"""

from __future__ import annotations

import logging
import math

import redis
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf_exceptions
from rest_framework import status
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """An error the user can fix or must be told about, with a stable code.

    Services raise it; the API renders it as JSON with ``status_code``.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        field: str | None = None,
        status_code: int = status.HTTP_400_BAD_REQUEST,
        extra: dict | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.status_code = status_code
        self.extra = extra or {}

    def as_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "field": self.field, **self.extra}


class ServiceUnavailable(ApplicationError):
    """A dependency (database, Redis, a matcher) cannot honour the request now."""

    def __init__(self, message: str = "A required service is unavailable; retry later.", *, code="SERVICE_UNAVAILABLE"):
        super().__init__(code, message, status_code=status.HTTP_503_SERVICE_UNAVAILABLE)


_DRF_CODES = {
    "parse_error": "MALFORMED_REQUEST",
    "throttled": "RATE_LIMITED",
}


def error_body(code: str, message: str, field: str | None = None, **extra) -> dict:
    return {"code": code, "message": message, "field": field, **extra}


def _flatten_validation(detail, path: str = "") -> list[dict]:
    """DRF nests errors in dicts and lists; turn them into a flat list."""
    if isinstance(detail, dict):
        items = []
        for key, value in detail.items():
            if key in ("non_field_errors", "__all__"):
                child = path
            else:
                child = f"{path}.{key}" if path else str(key)
            items.extend(_flatten_validation(value, child))
        return items
    if isinstance(detail, list):
        items = []
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)) and not isinstance(value, drf_exceptions.ErrorDetail):
                items.extend(_flatten_validation(value, f"{path}.{index}" if path else str(index)))
            else:
                items.extend(_flatten_validation(value, path))
        return items
    code = getattr(detail, "code", None) or "invalid"
    return [error_body(str(code).upper(), str(detail), path or None)]


def api_exception_handler(exc, context):
    """DRF EXCEPTION_HANDLER: every error as ``{"code", "message", "field"}``.

    A DRF exception may carry ``field`` and an ``extra`` dict as attributes;
    both end up in the body. Every 503 says ``Retry-After``.
    """
    if isinstance(exc, ApplicationError):
        response = Response(exc.as_dict(), status=exc.status_code)
        if exc.status_code == status.HTTP_503_SERVICE_UNAVAILABLE:
            response["Retry-After"] = "1"
        return response
    if isinstance(exc, Http404):
        return Response(error_body("NOT_FOUND", "Not found."), status=status.HTTP_404_NOT_FOUND)
    if isinstance(exc, DjangoPermissionDenied):
        return Response(
            error_body("PERMISSION_DENIED", "You do not have permission to perform this action."),
            status=status.HTTP_403_FORBIDDEN,
        )
    if isinstance(exc, drf_exceptions.ValidationError):
        errors = _flatten_validation(exc.detail) or [error_body("INVALID", "Invalid input.")]
        return Response({**errors[0], "errors": errors}, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, drf_exceptions.APIException):
        # A code given when raising (``AuthenticationFailed(msg, code="X")``,
        # or a permission class's ``code``) wins over the class default.
        raw_code = str(getattr(exc.detail, "code", None) or exc.default_code)
        code = _DRF_CODES.get(raw_code, raw_code.upper())
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        body = error_body(code, str(detail), getattr(exc, "field", None), **getattr(exc, "extra", {}))
        response = Response(body, status=exc.status_code)
        if exc.status_code == status.HTTP_503_SERVICE_UNAVAILABLE:
            response["Retry-After"] = "1"
        if isinstance(exc, drf_exceptions.Throttled) and exc.wait is not None:
            response["Retry-After"] = str(max(1, math.ceil(exc.wait)))
        if getattr(exc, "auth_header", None):
            response["WWW-Authenticate"] = exc.auth_header
        return response
    if isinstance(exc, (OperationalError, InterfaceError, redis.ConnectionError, redis.TimeoutError)):
        logger.error("dependency unavailable: %s", exc)
        return api_exception_handler(ServiceUnavailable(), context)
    if isinstance(exc, DatabaseError):
        logger.exception("database error")
        return None
    return None


def json_not_found(request, exception=None):
    """handler404: JSON for the API, Django's page for everything else."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body("NOT_FOUND", "No such endpoint."), status=404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)


def json_server_error(request):
    """handler500: JSON for the API (the error is logged with its request id)."""
    if request.path.startswith("/api/"):
        return JsonResponse(
            error_body("INTERNAL_ERROR", "Internal error; it has been logged.", request_id=getattr(request, "request_id", None)),
            status=500,
        )
    from django.views.defaults import server_error

    return server_error(request)
