"""OpenAPI helpers shared by the APIs: the error body and examples of it."""

from __future__ import annotations

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny


@extend_schema_serializer(component_name="Error")
class ErrorOutput(serializers.Serializer):
    code = serializers.CharField(help_text="Stable UPPER_SNAKE code to branch on.")
    message = serializers.CharField(help_text="For humans; may change.")
    field = serializers.CharField(allow_null=True, help_text="The offending input, or null.")


def error_response(description: str, *examples: tuple[str, str, str | None]) -> OpenApiResponse:
    """An error response documented with one example per ``(code, message, field)``."""
    return OpenApiResponse(
        ErrorOutput,
        description=description,
        examples=[
            OpenApiExample(code, value={"code": code, "message": message, "field": field}, response_only=True)
            for code, message, field in examples
        ],
    )


NOT_AUTHENTICATED = error_response(
    "Not signed in, or an API key signature was refused (see docs/API.md for every code).",
    ("NOT_AUTHENTICATED", "Authentication credentials were not provided.", None),
    ("INVALID_SIGNATURE", "The signature does not match the request.", "X-SIGNATURE"),
)
RATE_LIMITED = error_response(
    "Too many requests; the Retry-After header says when to retry.",
    ("RATE_LIMITED", "Request was throttled. Expected available in 1 second.", None),
)
MALFORMED = error_response(
    "The request could not be read: a malformed query or body, a repeated query parameter, or a field that "
    "breaks the rules (see the body's `code` and `field`).",
    ("INVALID", "A valid integer is required.", "limit"),
    ("MALFORMED_REQUEST", "The body is not valid JSON.", None),
    ("REPEATED_QUERY_PARAMETER", "Each query parameter may appear once.", "market"),
)
PERMISSION_DENIED = error_response(
    "Signed in, but not allowed: the API key lacks the permission, or the account the role.",
    ("PERMISSION_DENIED", "You do not have permission to perform this action.", None),
    ("API_KEY_PERMISSION_DENIED", "This API key lacks the 'trade' permission.", None),
)
NOT_FOUND = error_response(
    "No such object, or not one the caller may see.",
    ("NOT_FOUND", "Not found.", None),
)
UNAVAILABLE = error_response(
    "A dependency (the database, Redis, a matcher) cannot take the request now; nothing was written. "
    "Retry after the Retry-After header's seconds.",
    ("SERVICE_UNAVAILABLE", "A required service is unavailable; retry later.", None),
)


class ExchangeAutoSchema(AutoSchema):
    """drf-spectacular's schema, plus the error responses every endpoint can give.

    A view documents its own successes and the errors particular to it;
    the ones that follow from how it is built are added here, so that no
    endpoint forgets one: 400 when it reads a query, a path or a body (or a
    signed request's query), 401 and 403 when it authenticates, 404 when its
    path names an object, 429 and 503 when it is throttled (the throttle
    lives in Redis). A response a view documents itself is left as it is.
    """

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        view = self.view
        authenticated = bool(view.get_authenticators()) and not all(
            isinstance(permission, AllowAny) for permission in view.get_permissions())
        standard = {}
        reads_body = self.method in ("POST", "PUT", "PATCH")
        if reads_body or self._get_parameters() or authenticated:
            standard["400"] = MALFORMED
        if authenticated:
            standard["401"] = NOT_AUTHENTICATED
            standard["403"] = PERMISSION_DENIED
        if "{" in self.path:
            standard["404"] = NOT_FOUND
        if view.get_throttles():
            standard["429"] = RATE_LIMITED
            standard["503"] = UNAVAILABLE
        for code, response in standard.items():
            if code not in responses:
                responses[code] = self._get_response_for_code(response, code, direction=direction)
        return dict(sorted(responses.items()))
