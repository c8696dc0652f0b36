"""JSON request parsing that never turns an amount into a float."""

import decimal
import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class DecimalJSONParser(JSONParser):
    """Like DRF's JSONParser, but JSON numbers with a fraction or exponent
    become ``Decimal`` (exact), and NaN/Infinity literals are refused."""

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(f"The request body is not valid {encoding}.") from exc
        if not text.strip():
            return {}
        try:
            return json.loads(text, parse_float=decimal.Decimal, parse_constant=_refuse_constant)
        except ValueError as exc:
            raise ParseError(f"The request body is not valid JSON: {exc}") from exc


def _refuse_constant(name):
    raise ValueError(f"{name} is not a number")
