"""Orders on a market of 18-decimal assets with fine tick and step sizes, end to end.

Products of such amounts have more than the 28 significant digits of Python's
default decimal context: a hold computed there came out below the exact
notional, and the matcher's settlement of a partial fill then failed in the
ledger. Every amount is exact now (orders/rules.py, EXACT).
"""

from __future__ import annotations

import decimal
import uuid
from decimal import Decimal as D

import pytest

from matching.worker.matcher import Matcher
from orders.models import Order
from tests.factories import AssetFactory, MarketFactory, UserFactory
from tests.matching.conftest import drain
from tests.orders.conftest import heartbeat
from wallet.invariants import ledger_violations
from wallet.models import Hold
from wallet.services import deposit_credit

pytestmark = pytest.mark.django_db(transaction=True)

PRICE, QUANTITY = D("123456789.123456789"), D("12345678.123456789")


@pytest.fixture
def fine_market(redis_app):
    market = MarketFactory(
        base=AssetFactory(code="FINE", precision=18), quote=AssetFactory(code="WEI", precision=18),
        tick_size=D("1e-9"), step_size=D("1e-9"), min_quantity=D("1e-9"), max_quantity=D("1e15"),
        min_notional=D("0"), price_band=D("0.5"), maker_fee_rate=D("0.001"), taker_fee_rate=D("0.002"))
    users = [UserFactory() for _ in range(2)]
    for user in users:
        for asset in (market.base, market.quote):
            deposit_credit(user=user, asset=asset, amount=D(10**17), txid=uuid.uuid4().hex, source="CUSTODY")
    matcher = Matcher(market.symbol, batch_size=100, block_ms=1, sweep_after_s=0.5)
    matcher.start()
    heartbeat(market.symbol)
    yield market, users, matcher
    matcher.stop()


def test_a_fine_order_holds_the_exact_notional_and_its_partial_fills_settle(fine_market):
    """A buy of 12345678.123456789 at 123456789.123456789 holds exactly their product (35
    digits); a sell of a third of it fills it partly, then a cancel releases the rest: every
    ledger invariant holds, including that the open order holds what its unfilled part needs."""
    from orders.rules import OrderRequest
    from orders.services import order_cancel, order_place

    market, (buyer, seller), matcher = fine_market
    buy, _ = order_place(user=buyer, symbol=market.symbol,
                         request=OrderRequest(side="BUY", type="LIMIT", price=PRICE, quantity=QUANTITY))
    exact = decimal.Context(prec=100).multiply(PRICE, QUANTITY)
    assert Hold.objects.get(reference=f"order:{buy.pk}").amount_remaining == exact
    drain(matcher)

    third = D("4115226.041152263")
    order_place(user=seller, symbol=market.symbol,
                request=OrderRequest(side="SELL", type="LIMIT", price=PRICE, quantity=third))
    drain(matcher)
    buy = Order.objects.get(pk=buy.pk)
    assert (buy.status, buy.filled_quantity) == ("PARTIALLY_FILLED", third)
    assert Hold.objects.get(reference=f"order:{buy.pk}").amount_remaining == \
        decimal.Context(prec=100).multiply(PRICE, QUANTITY - third)
    assert ledger_violations() == []

    order_cancel(user=buyer, order_id=buy.pk)
    drain(matcher)
    assert Order.objects.get(pk=buy.pk).status == "CANCELED"
    assert ledger_violations() == []
