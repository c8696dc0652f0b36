"""PlainInput (orders/fastpath.py) takes a placement body only where the view's serializer would
take it, and then returns what the serializer returns; everything else is left to the serializer."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from exchange.core.fields import AmountField
from orders.api.views import OrderPlaceInput
from orders.fastpath import PlainInput

SERIALIZER = OrderPlaceInput()
PLAIN = PlainInput.of(SERIALIZER)

TEXTS = st.one_of(
    st.sampled_from(["BTC-USDT", "btc-usdt", "BUY", "SELL", "buy", "LIMIT", "MARKET", "IOC", "GTC", "FOK",
                     "EXPIRE_MAKER", "c-1", "", " ", " BTC-USDT", "BTC-USDT ", "a b", "x" * 40, "x" * 41,
                     "y" * 64, "y" * 65, "\x00", "é", "\ud800", "0", "1", "0.5", "100.001", " 1", "1 ",
                     "+1", "-1", "1e3", "1E-3", ".5", "5.", "1_000", "NaN", "Infinity", "1e999999999999999999999",
                     "0.0000000000000000001", "1.5000000000000000000000", "99999999999999999999", "1" * 61]),
    st.text(max_size=70),
    st.from_regex(r"[0-9]{1,22}(\.[0-9]{1,22})?", fullmatch=True),
)
VALUES = st.one_of(TEXTS, st.integers(-5, 10**21), st.decimals(allow_nan=False, places=3), st.booleans(),
                   st.none(), st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                                   max_size=1))
AMOUNTS = st.one_of(st.from_regex(r"[0-9]{1,21}(\.[0-9]{0,20})?([eE][+-]?[0-9]{1,2})?", fullmatch=True),
                    st.decimals(min_value=Decimal("1e-20"), max_value=Decimal("1e21"), allow_nan=False).map(str))


def near_valid(name):
    """Values the field mostly takes, and some it does not."""
    field = SERIALIZER.fields.get(name)
    if isinstance(field, serializers.ChoiceField):
        good = st.sampled_from(list(field.choices))
    elif isinstance(field, AmountField):
        good = AMOUNTS
    else:
        longest = field.max_length if field is not None else 10
        good = st.one_of(st.from_regex(r"[!-~]{1,%d}" % (longest + 2), fullmatch=True),
                         st.text(st.characters(min_codepoint=32, max_codepoint=127), max_size=longest + 2))
    return st.one_of(*[good] * 8, VALUES)


NAMES = st.sampled_from([*SERIALIZER.fields, "quanity", "extra"])
CHOICES = {name: st.sampled_from(list(field.choices)) for name, field in SERIALIZER.fields.items()
           if isinstance(field, serializers.ChoiceField)}
PLAUSIBLE = st.fixed_dictionaries(
    {"market": st.from_regex(r"[A-Za-z0-9-]{1,42}", fullmatch=True), "side": CHOICES["side"], "type": CHOICES["type"]},
    optional={"price": AMOUNTS, "quantity": AMOUNTS, "quote_quantity": AMOUNTS, "stop_price": AMOUNTS,
              "time_in_force": CHOICES["time_in_force"], "stp_mode": CHOICES["stp_mode"],
              "client_order_id": st.from_regex(r"[!-~]{1,66}", fullmatch=True)})
BODIES = st.one_of(
    PLAUSIBLE,
    st.dictionaries(NAMES, VALUES, max_size=10),
    st.fixed_dictionaries({name: near_valid(name) for name in ("market", "side", "type")},
                          optional={name: near_valid(name) for name in SERIALIZER.fields
                                    if name not in ("market", "side", "type")}),
    st.fixed_dictionaries({name: near_valid(name) for name in ("market", "side", "type")},
                          optional={name: near_valid(name) for name in (*SERIALIZER.fields, "quanity")
                                    if name not in ("market", "side", "type")}),
    st.lists(st.integers(), max_size=2),
    st.none(),
)


def serializer_answer(body):
    try:
        return dict(SERIALIZER.run_validation(body))
    except ValidationError:
        return "refused"


@hypothesis_settings(max_examples=3000, deadline=None, derandomize=True)
@given(BODIES)
def test_a_body_taken_is_taken_as_the_serializer_takes_it(body):
    taken = PLAIN.take(body)
    if taken is not None:
        assert taken == serializer_answer(body)
        assert [type(value) for value in taken.values()] == [type(value) for value in serializer_answer(body).values()]


@pytest.mark.parametrize("body", [
    {"market": "BTC-USDT", "side": "BUY", "type": "LIMIT", "price": "100.5", "quantity": "0.25"},
    {"market": "btc-usdt", "side": "SELL", "type": "LIMIT", "price": "1e2", "quantity": "1", "time_in_force": "IOC",
     "client_order_id": "b0d7c1a2e4f5461b9a8c3d2e1f0a9b8c", "stp_mode": "EXPIRE_MAKER"},
    {"market": "BTC-USDT", "side": "BUY", "type": "MARKET", "quote_quantity": "10"},
])
def test_the_bodies_clients_send_are_taken(body):
    taken = PLAIN.take(body)

    assert taken == serializer_answer(body)
    assert taken["price" if "price" in body else "quote_quantity"] > Decimal(0)


@pytest.mark.parametrize("body", [
    {"market": "BTC-USDT", "side": "BUY", "type": "LIMIT", "price": 100, "quantity": "1"},  # a JSON number
    {"market": " BTC-USDT", "side": "BUY", "type": "LIMIT", "price": "100", "quantity": "1"},  # trimmed by DRF
    {"market": "BTC-USDT", "side": "BUY", "type": "LIMIT", "price": "-1", "quantity": "1"},  # an error
    {"market": "BTC-USDT", "side": "BUY", "price": "100", "quantity": "1"},  # type missing
    {"market": "BTC-USDT", "side": "BUY", "type": "LIMIT", "quanity": "1"},  # unknown field
    {"market": "X" * 41, "side": "BUY", "type": "LIMIT", "price": "100", "quantity": "1"},  # too long
    {"market": "BTC-USDT", "side": "BUY", "type": "LIMIT", "price": "100", "quantity": "1", "client_order_id": "y" * 65},
    {"market": "BTC-USDT", "side": "BUY", "type": "LIMIT", "price": "100", "quantity": "1", "client_order_id": ""},
])
def test_the_rest_is_left_to_the_serializer(body):
    assert PLAIN.take(body) is None


class WithValidate(OrderPlaceInput):
    def validate(self, attrs):
        return attrs


class WithFieldCheck(OrderPlaceInput):
    def validate_market(self, value):
        return value


class WithDefault(OrderPlaceInput):
    time_in_force = serializers.ChoiceField(choices=["GTC", "IOC"], default="GTC")


class WithOtherField(OrderPlaceInput):
    leverage = serializers.IntegerField(required=False)


class WithValidatedAmount(OrderPlaceInput):
    price = AmountField(required=False, validators=[lambda value: value])


@pytest.mark.parametrize("serializer_class", [WithValidate, WithFieldCheck, WithDefault, WithOtherField,
                                              WithValidatedAmount])
def test_a_serializer_with_checks_plain_input_does_not_model_is_never_bypassed(serializer_class):
    assert PlainInput.of(serializer_class()) is None
