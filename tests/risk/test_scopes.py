"""Scope precedence of risk limits (user, then KYC tier, then market, then global, per limit),
and ``manage.py risk_limit`` to set, show and clear them."""

from __future__ import annotations

from decimal import Decimal as D
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from exchange.core.errors import ApplicationError
from exchange.profiles import UserProfile
from risk.limits import limit_book
from risk.models import RiskLimit, Scope
from risk.services import risk_limit_clear, risk_limit_set
from tests.factories import AssetFactory, MarketFactory
from tests.risk.conftest import place

pytestmark = pytest.mark.django_db(transaction=True)


def risk_limit(*args) -> str:
    out = StringIO()
    call_command("risk_limit", *args, stdout=out)
    return out.getvalue()


def test_the_most_specific_scope_wins_per_limit(live_market, traders):
    """User beats tier beats market beats global, limit by limit: a scope that does not set a
    limit lets a wider one through."""
    alice, bob, carol = traders
    other = MarketFactory(base=AssetFactory(code="ETH", name="Ether"), quote=live_market.quote)
    UserProfile.objects.create(user=alice, kyc_tier=2)
    UserProfile.objects.create(user=bob, kyc_tier=2)
    risk_limit_set(scope=Scope.GLOBAL, values={"max_open_orders": 10, "max_daily_orders": 100})
    risk_limit_set(scope=Scope.MARKET, market=live_market, values={"max_open_orders": 5})
    risk_limit_set(scope=Scope.TIER, kyc_tier=2, values={"max_open_orders": 3, "max_position": "7"})
    risk_limit_set(scope=Scope.USER, user=alice, values={"max_open_orders": 2})
    book = limit_book()

    def effective(user, tier, market):
        limits = book.effective(user_id=user.pk, kyc_tier=tier, market_id=market.pk)
        return limits.max_open_orders, limits.scopes["max_open_orders"], limits.max_daily_orders, limits.max_position

    assert effective(alice, 2, live_market) == (2, "USER", 100, D(7))
    assert effective(bob, 2, live_market) == (3, "TIER", 100, D(7))
    assert effective(carol, 0, live_market) == (5, "MARKET", 100, None)
    assert effective(carol, 0, other) == (10, "GLOBAL", 100, None)


def test_placement_applies_the_user_limit_over_the_global_one(live_market, traders):
    """Through placement: alice's own limit of 1 open order beats the global 3; bob gets 3; and a
    change of KYC tier takes effect at once (the profile is watched by the caches)."""
    alice, bob = traders[:2]
    risk_limit_set(scope=Scope.GLOBAL, values={"max_open_orders": 3})
    risk_limit_set(scope=Scope.USER, user=alice, values={"max_open_orders": 1})
    risk_limit_set(scope=Scope.TIER, kyc_tier=1, values={"max_open_orders": 4})
    place(alice, price="99", quantity="1")
    with pytest.raises(ApplicationError, match="limit is 1"):
        place(alice, price="98", quantity="1")
    for price in ("99", "98", "97"):
        place(bob, price=price, quantity="1")
    with pytest.raises(ApplicationError) as info:
        place(bob, price="96", quantity="1")
    assert info.value.as_dict()["scope"] == "GLOBAL"
    UserProfile.objects.create(user=bob, kyc_tier=1)
    place(bob, price="96", quantity="1")


def test_limit_values_are_validated(live_market):
    """Counts are whole numbers, amounts positive, the band a fraction; nothing is saved otherwise."""
    for values, field in (({"max_open_orders": "1.5"}, "max_open_orders"), ({"max_position": "0"}, "max_position"),
                          ({"price_band": "1"}, "price_band"), ({"max_order_notional": "abc"}, "max_order_notional"),
                          ({"max_everything": 1}, "max_everything")):
        with pytest.raises(ApplicationError) as info:
            risk_limit_set(scope=Scope.GLOBAL, values=values)
        assert info.value.field == field
    with pytest.raises(ApplicationError, match="needs its market"):
        risk_limit_set(scope=Scope.MARKET, values={"max_open_orders": 1})
    assert not RiskLimit.objects.exists()


def test_risk_limit_command_sets_shows_and_clears(live_market, traders):
    """``set`` with one flag per limit at each scope, ``show`` (with the effective limits of a
    user), ``clear`` of one limit, then of the whole scope."""
    out = risk_limit("set", "--global", "--max-open-orders", "50", "--max-daily-notional", "1000000")
    assert "--max-open-orders 50" in out and "--max-daily-notional 1000000" in out
    risk_limit("set", "--market", "btc-usdt", "--max-order-quantity", "5", "--price-band", "0.05")
    risk_limit("set", "--tier", "1", "--max-orders-per-second", "10")
    risk_limit("set", "--user", "alice", "--max-open-orders", "7", "--max-position", "2.5")

    shown = risk_limit("show")
    assert all(text in shown for text in ("Global limits", "Market limits (BTC-USDT)", "KYC tier limits (tier 1)",
                                          "User limits (alice)"))
    alice = risk_limit("show", "--user", "alice")
    assert "BTC-USDT: max_open_orders=7 (user), max_order_quantity=5 (market)" in alice
    assert "max_daily_notional=1000000 (global)" in alice and "price_band=0.05 (market)" in alice

    risk_limit("clear", "--user", "alice", "--max-open-orders")
    assert RiskLimit.objects.get(scope=Scope.USER).max_open_orders is None
    assert "Cleared every limit" in risk_limit("clear", "--user", "alice")
    assert not RiskLimit.objects.filter(scope=Scope.USER).exists()

    with pytest.raises(CommandError, match="at least one limit"):
        risk_limit("set", "--global")
    with pytest.raises(CommandError, match="INVALID_LIMIT"):
        risk_limit("set", "--global", "--max-open-orders", "-1")
    with pytest.raises(CommandError, match="NO_SUCH_LIMIT"):
        risk_limit("clear", "--tier", "9")
    with pytest.raises(CommandError):
        risk_limit("set", "--global", "--user", "alice", "--max-open-orders", "1")


def test_clearing_every_limit_of_a_scope_deletes_its_row(live_market):
    """A scope whose last limit is cleared has no row left (nothing shadows wider scopes)."""
    risk_limit_set(scope=Scope.MARKET, market=live_market, values={"max_open_orders": 1, "max_position": "1"})
    assert risk_limit_clear(scope=Scope.MARKET, market=live_market, names=["max_open_orders"]) is not None
    assert risk_limit_clear(scope=Scope.MARKET, market=live_market, names=["max_position"]) is None
    assert not RiskLimit.objects.exists()
