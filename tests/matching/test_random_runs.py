"""Seeded random runs of the whole order flow: placement, matcher, ledger.

Every order type, cancels, cancel-alls and amendments from several users go
through the real services and an in-process matcher, drained at random
moments. After every drain the ledger's invariants hold (including that every
order holds exactly what it still needs) and the book rebuilt from the
database equals the book in memory; at the end, money is conserved per asset.
"""

from __future__ import annotations

import random
from decimal import Decimal as D

import pytest
from django.db.models import Sum

from exchange.core.errors import ApplicationError
from orders.models import OPEN_STATUSES, RESTING_STATUSES, Order, Trade
from orders.services import order_amend, order_cancel, orders_cancel_all
from tests.matching.conftest import FUNDS, drain, fund, place
from tests.matching.test_matcher import assert_sound
from tests.factories import UserFactory
from wallet.models import Account


def _random_order(rng: random.Random, user):
    mid = 100 + rng.randint(-3, 3)
    side = rng.choice(["BUY", "SELL"])
    quantity = D(rng.randint(1, 30)) / 10
    kind = rng.random()
    price = D(mid + rng.choice([-2, -1, 0, 1, 2]) * D("0.5"))
    if kind < 0.55:
        return place(user, side, "LIMIT", price=price, quantity=quantity,
                     time_in_force=rng.choice(["GTC", "GTC", "GTC", "IOC", "FOK"]),
                     stp_mode=rng.choice([None, "NONE", "EXPIRE_MAKER", "EXPIRE_BOTH"]))
    if kind < 0.65:
        return place(user, side, "LIMIT_MAKER", price=price, quantity=quantity)
    if kind < 0.8:
        if rng.random() < 0.5:
            return place(user, side, "MARKET", quantity=quantity)
        return place(user, side, "MARKET", quote_quantity=D(rng.randint(20, 300)))
    stop = D(mid + rng.choice([-4, -3, 3, 4]))
    rising = stop > mid
    stop_type = rng.choice(["STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"])
    # A stop that would trigger at once is refused by the engine; keep most valid.
    if (stop_type.startswith("STOP_LOSS") and side == "BUY") != rising:
        side = "BUY" if side == "SELL" else "SELL"
    fields = {"stop_price": stop, "quantity": quantity}
    if stop_type.endswith("LIMIT"):
        fields["price"] = stop + (D("0.5") if side == "BUY" else D("-0.5"))
    return place(user, side, stop_type, **fields)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_order_flow_keeps_every_invariant(market, matcher, seed):
    rng = random.Random(seed)
    users = [UserFactory(username=f"rnd{seed}_{i}") for i in range(4)]
    for user in users:
        fund(user, market)
    refused = 0
    for step in range(260):
        user = rng.choice(users)
        action = rng.random()
        try:
            if action < 0.7:
                _random_order(rng, user)
            elif action < 0.85:
                open_ids = list(Order.objects.filter(user=user, status__in=OPEN_STATUSES).values_list("id", flat=True))
                if open_ids:
                    order_cancel(user=user, order_id=rng.choice(open_ids))
            elif action < 0.95:
                resting = list(Order.objects.filter(user=user, status__in=RESTING_STATUSES, type="LIMIT"))
                if resting:
                    order = rng.choice(resting)
                    new_quantity = order.filled_quantity + D(rng.randint(1, 20)) / 10
                    new_price = order.price + rng.choice([D(0), D("0.5"), D("-0.5")])
                    order_amend(user=user, order_id=order.pk, price=new_price if new_price != order.price else None,
                                quantity=new_quantity)
            else:
                orders_cancel_all(user=user, symbol=market.symbol)
        except ApplicationError:
            refused += 1  # e.g. an amend of an order that just filled, a market order with no reference
        if rng.random() < 0.2:
            drain(matcher)
            assert_sound(matcher)
    drain(matcher)
    assert_sound(matcher)

    assert not Order.objects.filter(status="PENDING").exists()
    assert Trade.objects.count() > 20, "the run should trade"
    assert refused < 100
    # Money is conserved per asset: users' balances plus fees equal what was deposited.
    for code in ("BTC", "USDT"):
        total = Account.objects.filter(asset__code=code).exclude(kind="EXTERNAL").aggregate(s=Sum("balance"))["s"]
        assert total == FUNDS[code] * len(users)
