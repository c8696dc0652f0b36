"""Risk reads scoped to who asks."""

from __future__ import annotations

from decimal import Decimal

from exchange.models import Asset, Market
from risk import counters
from risk.limits import kyc_tier, limit_book, restrictions
from risk.models import LIMIT_FIELDS

ZERO = Decimal(0)


def risk_overview_for_user(*, user, market: Market | None = None) -> dict:
    """The caller's trading state, effective limits per market (with the scope each comes
    from) and current usage, as the pre-trade check sees them (the Redis counters, rebuilt
    from the database first if they were lost)."""
    state = restrictions()
    tier = kyc_tier(user.pk)
    book = limit_book()
    markets = [market] if market is not None else list(Market.objects.order_by("symbol"))
    per_market = []
    for each in markets:
        limits = book.effective(user_id=user.pk, kyc_tier=tier, market_id=each.pk)
        per_market.append({
            "market": each.symbol,
            "halted": each.status == Market.Status.HALTED or each.pk in state.halted_markets,
            "limits": {name: None if getattr(limits, name) is None else
                       {"value": Decimal(getattr(limits, name)), "scope": limits.scopes[name]} for name in LIMIT_FIELDS},
        })
    usage = counters.usage_read(user_id=user.pk)
    codes = dict(Asset.objects.values_list("id", "code"))
    assets = sorted(set(usage.position_today) | set(usage.open_buy) | set(usage.open_sell), key=codes.get)
    return {
        "trading_status": state.user_state(user.pk),
        "exchange_halted": state.exchange_halted,
        "kyc_tier": tier,
        "markets": per_market,
        "usage": {
            "open_orders": usage.open_orders,
            "orders_today": usage.orders_today,
            "notional_today": [{"asset": codes[asset], "value": value}
                               for asset, value in sorted(usage.value_today.items(), key=lambda item: codes[item[0]])],
            "positions": [{"asset": codes[asset], "net_today": usage.position_today.get(asset, ZERO),
                           "open_buy": usage.open_buy.get(asset, ZERO), "open_sell": usage.open_sell.get(asset, ZERO)}
                          for asset in assets],
        },
    }
