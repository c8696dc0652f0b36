"""JSON request parsing that never turns an amount into a float."""

import decimal
import json

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class DecimalJSONParser(JSONParser):
    """Like DRF's JSONParser, but JSON numbers with a fraction or exponent
    become ``Decimal`` (exact), and NaN/Infinity literals are refused.

    Also refused, as MALFORMED_REQUEST (400): an object that repeats a key
    (``{"price": "1", "price": "2"}`` means different things to different
    parsers, so a proxy or a log could see another order than the one placed),
    and nesting too deep for the parser (``[[[[...`` would otherwise exhaust
    the interpreter's stack and answer 500).
    """

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        return parse_json_body(stream.read(), encoding=parser_context.get("encoding", settings.DEFAULT_CHARSET))


def parse_json_body(body: bytes, *, encoding: str = "utf-8"):
    """A request body as DecimalJSONParser reads it (an empty body is ``{}``); ParseError otherwise."""
    try:
        text = body.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ParseError(f"The request body is not valid {encoding}.") from exc
    if not text.strip():
        return {}
    try:
        return json.loads(
            text, parse_float=decimal.Decimal, parse_constant=_refuse_constant, object_pairs_hook=_unique_keys
        )
    except RecursionError:
        raise ParseError("The request body is nested too deeply.") from None
    except ArithmeticError:
        # A number whose exponent Decimal cannot hold: 1e9999999999999999999999.
        raise ParseError("The request body is not valid JSON: a number is out of range.") from None
    except ValueError as exc:
        raise ParseError(f"The request body is not valid JSON: {exc}") from exc


def _refuse_constant(name):
    raise ValueError(f"{name} is not a number")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"the key {repeated!r} appears more than once")
    return result
