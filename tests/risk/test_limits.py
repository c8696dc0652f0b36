"""Each pre-trade limit at its boundary, through order placement: exactly at the limit
passes, one step over is refused with the limit's code, and nothing is written."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from exchange.core.errors import ApplicationError
from orders.models import Order
from risk.models import Scope
from risk.services import risk_limit_set
from tests.risk.conftest import place

pytestmark = pytest.mark.django_db(transaction=True)


def refused(code: str, call, *args, **kwargs) -> ApplicationError:
    before = Order.objects.count()
    with pytest.raises(ApplicationError) as info:
        call(*args, **kwargs)
    assert info.value.code == code, info.value.as_dict()
    assert Order.objects.count() == before, "a refused order writes nothing"
    return info.value


def test_max_order_quantity(live_market, traders):
    """A global max order quantity of 1 BTC: 1 is accepted, 1.0001 (one step more) is refused with 400."""
    alice = traders[0]
    risk_limit_set(scope=Scope.GLOBAL, values={"max_order_quantity": "1"})
    place(alice, price="100", quantity="1")
    error = refused("RISK_MAX_ORDER_QUANTITY", place, alice, price="100", quantity="1.0001")
    assert (error.status_code, error.field) == (400, "quantity")
    assert error.as_dict()["scope"] == "GLOBAL" and error.as_dict()["limit_value"] == "1"


def test_max_order_notional(live_market, traders):
    """Max order value 1000 USDT: 100 x 10 passes, 100 x 10.0001 (one step more) is refused; a market
    buy by quote amount is valued at that amount."""
    alice = traders[0]
    risk_limit_set(scope=Scope.MARKET, market=live_market, values={"max_order_notional": "1000"})
    place(alice, price="100", quantity="10")
    refused("RISK_MAX_ORDER_NOTIONAL", place, alice, price="100", quantity="10.0001")
    place(alice, order_type="MARKET", quote_quantity="1000")
    error = refused("RISK_MAX_ORDER_NOTIONAL", place, alice, order_type="MARKET", quote_quantity="1000.01")
    assert error.field == "quote_quantity"


def test_price_band(live_market, traders):
    """A 5% band around the last price 100: 95 and 105 pass, 94.99 and 105.01 are refused."""
    alice = traders[0]
    risk_limit_set(scope=Scope.GLOBAL, values={"price_band": "0.05"})
    place(alice, "BUY", price="95", quantity="1")
    place(alice, "SELL", price="105", quantity="1")
    assert refused("RISK_PRICE_BAND", place, alice, "BUY", price="94.99", quantity="1").field == "price"
    refused("RISK_PRICE_BAND", place, alice, "SELL", price="105.01", quantity="1")


def test_max_open_orders(live_market, traders):
    """Two open orders at most: the second is accepted, the third refused with 409; another user is
    not affected."""
    alice, bob = traders[:2]
    risk_limit_set(scope=Scope.GLOBAL, values={"max_open_orders": 2})
    place(alice, price="99", quantity="1")
    place(alice, price="98", quantity="1")
    assert refused("RISK_MAX_OPEN_ORDERS", place, alice, price="97", quantity="1").status_code == 409
    place(bob, price="97", quantity="1")


def test_max_daily_orders(live_market, traders):
    """Three orders a day: the third passes, the fourth is refused."""
    alice = traders[0]
    risk_limit_set(scope=Scope.USER, user=alice, values={"max_daily_orders": 3})
    for price in ("99", "98", "97"):
        place(alice, price=price, quantity="1")
    refused("RISK_DAILY_ORDER_COUNT", place, alice, price="96", quantity="1")


def test_max_daily_notional(live_market, traders):
    """1000 USDT of orders a day: after 999, an order of 1.01 (one step over) is refused and one of
    1.00 (exactly at the limit) passes."""
    alice = traders[0]
    risk_limit_set(scope=Scope.GLOBAL, values={"max_daily_notional": "1000", "max_order_notional": "100000"})
    place(alice, price="100", quantity="6")
    place(alice, price="100", quantity="3.99")
    error = refused("RISK_DAILY_NOTIONAL", place, alice, price="100", quantity="0.0101")
    assert "999" in error.message and "1000" in error.message
    place(alice, price="100", quantity="0.01")


def test_max_position(live_market, traders):
    """A net position of 1 BTC at most, counting what open orders could add: after buys of 0.99,
    0.0101 more is refused and 0.01 (exactly 1) passes; sells count on their own side."""
    alice = traders[0]
    risk_limit_set(scope=Scope.GLOBAL, values={"max_position": "1"})
    place(alice, "BUY", price="99", quantity="0.6")
    place(alice, "BUY", price="98", quantity="0.39")
    refused("RISK_MAX_POSITION", place, alice, "BUY", price="100", quantity="0.0101")
    place(alice, "BUY", price="100", quantity="0.01")
    place(alice, "SELL", price="101", quantity="1")
    refused("RISK_MAX_POSITION", place, alice, "SELL", price="102", quantity="0.0101")


def test_max_orders_per_second(live_market, traders):
    """Two orders per second: within one second the third is refused with 429; the next second
    starts again."""
    from orders.rules import OrderRequest, Reference, order_check
    from risk.pretrade import order_pre_trade_check

    alice = traders[0]
    risk_limit_set(scope=Scope.GLOBAL, values={"max_orders_per_second": 2})
    reference = Reference(last_price=None)
    checked = order_check(market=live_market, request=OrderRequest(side="BUY", type="LIMIT", price=D(100), quantity=D(1)),
                          reference=reference)

    def check(coid: str, now_ms: int):
        return order_pre_trade_check(user=alice, market=live_market, order=checked, reference=reference,
                                     client_order_id=coid, now_ms=now_ms)

    second = 1_900_000_000_000
    check("a", second)
    check("b", second + 999)
    error = refused("RISK_ORDER_RATE", check, "c", second + 500)
    assert error.status_code == 429
    check("d", second + 1000)


def test_caches_about_to_expire_are_warmed_again_before_an_async_caller_reads_them(live_market, traders):
    """The order fast path checks ``cached`` and then reads the caches on its event loop; an entry
    expiring in between would be loaded there. An entry within a second of its expiry therefore
    counts as not cached, and ``warm`` loads it again."""
    import time as clock

    from risk import limits

    alice = traders[0]
    limits.warm(alice.pk)
    assert limits.cached(alice.pk)
    book = limits._limits_cache.peek(None)
    aged = clock.monotonic() - limits._limits_cache.max_age_s + 0.5  # half a second left
    limits._limits_cache._entries[None] = (aged, book)
    assert limits._limits_cache.peek(None) is book, "still valid"
    assert not limits.cached(alice.pk), "but too close to its expiry for an async caller"
    limits.warm(alice.pk)
    assert limits.cached(alice.pk)
    assert limits._limits_cache._entries[None][0] > aged, "loaded again"
