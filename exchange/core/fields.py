"""Serializer fields shared by every API."""

from decimal import Decimal

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers


def decimal_to_str(value: Decimal | None) -> str | None:
    """Plain decimal notation without trailing zeros: 0.0100 -> '0.01', 1E+1 -> '10'."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "0") else text


@extend_schema_field({"type": "string", "format": "decimal", "example": "0.01"})
class DecimalString(serializers.Field):
    """Output-only decimal rendered as an exact string (never a float)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("read_only", True)
        super().__init__(**kwargs)

    def to_representation(self, value):
        return decimal_to_str(value)


__all__ = ["DecimalString", "decimal_to_str", "OpenApiTypes"]
