"""Serializer fields shared by every API."""

import re
from decimal import Decimal

from django.http import QueryDict
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


# What an amount may look like, in ASCII only: Decimal() alone would also take
# "1_000", "١٢" (Arabic-Indic digits), "Infinity" and "NaN".
_AMOUNT_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
AMOUNT_LIMIT = Decimal(10) ** 20  # exclusive: what an amount column (38 digits, 18 places) holds
AMOUNT_PLACES_MAX = 18


def decimal_places(value: Decimal) -> int:
    """Decimal places of a finite ``value`` once trailing zeros are dropped, exactly.

    ``Decimal.normalize()`` would round to the context's 28 digits first, so
    "1.0000000000000000000000000000001" would count as 1, and
    "1E-99999999999" as 0.
    """
    _, digits, exponent = value.as_tuple()
    trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, -(exponent + trailing_zeros)) if any(digits) else 0


@extend_schema_field({"type": "string", "format": "decimal", "example": "0.5"})
class AmountField(serializers.Field):
    """An input amount: a decimal string (or JSON number), finite, positive,
    below 10^20, at most 18 decimal places (so at most 38 significant digits:
    what every amount column holds exactly).

    The text is plain ASCII decimal notation with an optional exponent
    ("0.25", "25e-2"); surrounding whitespace is ignored. Errors have stable
    codes: INVALID_AMOUNT (not a number, NaN, Infinity, a JSON bool, list,
    object...), MUST_BE_POSITIVE, TOO_MANY_DECIMALS, AMOUNT_TOO_LARGE.
    Whether the amount fits a market's tick or step size is a business rule
    checked by the service.
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
        if isinstance(data, int):
            # Compared as an integer: str() of a huge int is slow, or refused.
            if data <= 0:
                self.fail("must_be_positive")
            if data >= AMOUNT_LIMIT:
                self.fail("amount_too_large")
            return Decimal(data)
        text = str(data).strip()
        if len(text) > 60 or not _AMOUNT_TEXT.fullmatch(text):
            self.fail("invalid_amount")
        try:
            value = Decimal(text)
        except ArithmeticError:  # an exponent beyond what Decimal represents: "1e999999999999999999999"
            mantissa, _, exponent = text.lower().partition("e")
            if mantissa.startswith("-"):
                self.fail("must_be_positive")
            self.fail("too_many_decimals" if exponent.startswith("-") else "amount_too_large")
        if value <= 0:
            self.fail("must_be_positive")
        if value >= AMOUNT_LIMIT:
            self.fail("amount_too_large")
        # Trailing zeros are not decimals: "1.500000000000000000000" is 1.5.
        if decimal_places(value) > AMOUNT_PLACES_MAX:
            self.fail("too_many_decimals")
        return value

    def to_representation(self, value):
        return decimal_to_str(value)


class StrictCharField(serializers.CharField):
    """A CharField that takes only JSON strings (NOT_A_STRING otherwise).

    DRF's CharField turns the number 12 into "12" and 1.50 into "1.50": an
    identifier sent with the wrong JSON type would be silently rewritten.
    """

    default_error_messages = {"not_a_string": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class QueryInputSerializer(serializers.Serializer):
    """Input read from a query string as plain values, not as an HTML form:
    DRF treats a blank form field (``?status=``) as absent, so a filter left
    empty by a client's bug would silently widen the answer; here it is
    refused like any other invalid value."""

    def to_internal_value(self, data):
        return super().to_internal_value(data.dict() if isinstance(data, QueryDict) else data)


class StrictInputSerializer(QueryInputSerializer):
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
