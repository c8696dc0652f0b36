"""Serializer fields shared by every API."""

import re
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


@extend_schema_field({"type": "string", "format": "decimal", "example": "0.5"})
class DecimalInput(serializers.Field):
    """Input decimal sent as a string ("0.5"; a JSON integer is accepted too, a float never).

    Errors use the code INVALID_AMOUNT. Range and precision checks belong to
    the service, which knows the asset.
    """

    default_error_messages = {"invalid": "Send a plain decimal string such as \"0.5\"."}
    _pattern = re.compile(r"^-?[0-9]{1,40}(\.[0-9]{1,40})?$")

    def to_internal_value(self, data):
        if isinstance(data, int) and not isinstance(data, bool):
            return Decimal(data)
        if isinstance(data, str) and self._pattern.match(data.strip()):
            return Decimal(data.strip())
        raise serializers.ValidationError(self.error_messages["invalid"], code="INVALID_AMOUNT")

    def to_representation(self, value):
        return decimal_to_str(value)


__all__ = ["DecimalInput", "DecimalString", "decimal_to_str", "OpenApiTypes"]
