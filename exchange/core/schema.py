"""OpenAPI helpers shared by the APIs: the error body and examples of it."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema_serializer
from rest_framework import serializers


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
