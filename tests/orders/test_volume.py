"""The 30-day trading volume behind VIP fee tiers."""

from decimal import Decimal as D

from django.core.cache import cache

from orders.models import Trade
from orders.selectors import trading_volume_30d
from tests.matching.conftest import drain, place


def test_volume_counts_trades_with_others_once_and_leaves_out_self_trades(traders, matcher):
    alice, bob, _ = traders
    place(bob, "SELL", price="100", quantity="1")
    place(alice, "BUY", price="100", quantity="1")          # alice takes from bob: 100
    place(alice, "SELL", price="101", quantity="2", stp_mode="NONE")
    place(alice, "BUY", price="101", quantity="2", stp_mode="NONE")  # alice with herself: 202
    drain(matcher)
    cache.clear()
    assert [(t.maker_user, t.taker_user, t.notional) for t in Trade.objects.order_by("sequence")] == [
        (bob, alice, D("100")), (alice, alice, D("202"))]

    assert trading_volume_30d(user=alice, asset_code="USDT") == D("100")
    assert trading_volume_30d(user=bob, asset_code="USDT") == D("100")
    assert trading_volume_30d(user=alice, asset_code="BTC") == D("0")
