"""Serializer fields shared by every API."""

from decimal import Decimal

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
class AmountField(serializers.Field):
    """An input amount: a decimal string (or JSON number), finite, positive,
    at most 38 significant digits and 18 decimal places.

    Errors have stable codes: INVALID_AMOUNT, MUST_BE_POSITIVE,
    TOO_MANY_DECIMALS, AMOUNT_TOO_LARGE. Whether the amount fits a market's
    tick or step size is a business rule checked by the service.
    """

    default_error_messages = {
        "invalid_amount": "Must be a decimal number, e.g. \"0.25\".",
        "must_be_positive": "Must be greater than zero.",
        "too_many_decimals": "At most 18 decimal places.",
        "amount_too_large": "Too large.",
    }

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (str, int, Decimal)):
            self.fail("invalid_amount")
        text = str(data).strip()
        if not text or len(text) > 60:
            self.fail("invalid_amount")
        try:
            value = Decimal(text)
        except ArithmeticError:
            self.fail("invalid_amount")
        if not value.is_finite():
            self.fail("invalid_amount")
        if value <= 0:
            self.fail("must_be_positive")
        if value >= Decimal(10) ** 20:
            self.fail("amount_too_large")
        # Trailing zeros are not decimals: "1.500000000000000000000" is 1.5.
        if value.normalize().as_tuple().exponent < -18:
            self.fail("too_many_decimals")
        return value

    def to_representation(self, value):
        return decimal_to_str(value)


class StrictInputSerializer(serializers.Serializer):
    """Refuses fields it does not know (UNKNOWN_FIELD): a typo such as
    "quanity" must fail loudly, not be ignored."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: [serializers.ErrorDetail("This field is not accepted.", code="unknown_field")]
                     for name in unknown})
        return super().to_internal_value(data)
