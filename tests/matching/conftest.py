"""Fixtures for the matcher: a market, funded traders, and an in-process matcher.

Tests here commit for real (``transaction=True``): the matcher's batches are
database transactions, placement enqueues on commit, and recovery reads what
was committed, exactly as in production.
"""

from __future__ import annotations

import uuid
from decimal import Decimal as D

import pytest

from exchange.models import Market
from matching.worker.matcher import Matcher
from orders.rules import OrderRequest
from orders.services import order_place
from tests.factories import AssetFactory, MarketFactory, UserFactory
from wallet.services import deposit_credit

FUNDS = {"USDT": D("1000000"), "BTC": D("100")}


@pytest.fixture
def market(transactional_db) -> Market:
    return MarketFactory(
        base=AssetFactory(code="BTC", name="Bitcoin", precision=8),
        quote=AssetFactory(code="USDT", name="Tether USD", precision=8),
        tick_size=D("0.01"),
        step_size=D("0.0001"),
        min_quantity=D("0.0001"),
        max_quantity=D("1000"),
        min_notional=D("1"),
        maker_fee_rate=D("0.001"),
        taker_fee_rate=D("0.002"),
        price_band=D("0.5"),
    )


def fund(user, market: Market, funds: dict = FUNDS) -> None:
    for asset in (market.base, market.quote):
        deposit_credit(user=user, asset=asset, amount=funds[asset.code], txid=f"test-{uuid.uuid4().hex}",
                       source="CUSTODY")


@pytest.fixture
def traders(market):
    users = [UserFactory(username=name) for name in ("alice", "bob", "carol")]
    for user in users:
        fund(user, market)
    return users


@pytest.fixture
def matcher(market, redis_app):
    instance = Matcher(market.symbol, batch_size=500, block_ms=1, sweep_after_s=0.5)
    instance.start()
    yield instance
    instance.stop()


def drain(matcher: Matcher) -> None:
    """Apply everything enqueued so far (the pending list, then new entries)."""
    idle = 0
    while idle < 2:
        idle = idle + 1 if matcher.run_once() == 0 else 0


def place(user, side: str, order_type: str = "LIMIT", *, symbol: str = "BTC-USDT", **fields):
    amounts = {name: D(str(value)) for name, value in fields.items() if name in
               ("price", "quantity", "quote_quantity", "stop_price") and value is not None}
    others = {name: value for name, value in fields.items() if name not in amounts}
    order, _ = order_place(user=user, symbol=symbol, request=OrderRequest(side=side, type=order_type, **amounts, **others))
    return order
