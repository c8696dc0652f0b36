"""The fee schedule: which maker/taker rates a user pays on a market, and fee rounding.

Rates, first match wins:

1. the user's override for this market, then the user's override for all
   markets (``FeeOverride``, set by the operator);
2. the VIP tier (``FeeTier``) with the highest 30-day volume threshold the
   user reaches, never above the market's own rates;
3. the market's ``maker_fee_rate`` / ``taker_fee_rate``.

The 30-day volume comes from a provider the orders app registers with
``register_volume_30d_provider(fn)``; ``fn(user=..., asset_code=...)``
returns the user's volume over the last 30 days in ``asset_code`` (setting
``WALLET_FEE_VOLUME_ASSET``, USDT by default). Until then every user's volume
is 0.

Fees are charged on what a side receives and rounded DOWN to the asset's
precision (``fee_amount``), so the fee never exceeds rate x amount and no
rounding creates money.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Callable

from django.conf import settings
from django.db.models import Q

from exchange.core.localcache import LocalCache
from exchange.models import Market
from wallet.models import FeeOverride, FeeTier

VolumeProvider = Callable[..., Decimal]


@dataclass(frozen=True)
class FeeRates:
    maker: Decimal
    taker: Decimal


def _no_volume(*, user, asset_code: str) -> Decimal:
    return Decimal(0)


_volume_30d_provider: VolumeProvider = _no_volume


def register_volume_30d_provider(provider: VolumeProvider | None) -> None:
    """Use ``provider(user=..., asset_code=...) -> Decimal`` for 30-day volumes (None: back to 0)."""
    global _volume_30d_provider
    _volume_30d_provider = provider or _no_volume


def volume_30d(*, user) -> Decimal:
    return _volume_30d_provider(user=user, asset_code=settings.WALLET_FEE_VOLUME_ASSET)


def fee_rates_for(*, user, market: Market) -> FeeRates:
    """The maker and taker rates ``user`` pays on ``market`` (see the module docstring)."""
    overrides = sorted(
        FeeOverride.objects.filter(Q(market=market) | Q(market__isnull=True), user=user),
        key=lambda override: override.market_id is None,
    )
    if overrides:
        return FeeRates(overrides[0].maker_fee_rate, overrides[0].taker_fee_rate)
    default = FeeRates(market.maker_fee_rate, market.taker_fee_rate)
    tiers = list(FeeTier.objects.order_by("-volume_30d_min"))
    if tiers:
        volume = volume_30d(user=user)
        for tier in tiers:
            if volume >= tier.volume_30d_min:
                return FeeRates(min(tier.maker_fee_rate, default.maker), min(tier.taker_fee_rate, default.taker))
    return default


# Rates per (user, market) for order placement, per process: dropped on any
# change of fee overrides, tiers or markets (the shared token,
# exchange/core/localcache.py), and after FEE_RATES_MAX_AGE_S in any case,
# so a user whose 30-day volume crosses a tier pays the new rates on orders
# placed within that time.
FEE_RATES_MAX_AGE_S = 60.0
_fee_rates = LocalCache("fee_rates", max_age_s=FEE_RATES_MAX_AGE_S)


def fee_rates_cached(*, user, market: Market) -> FeeRates:
    """``fee_rates_for`` from this process's cache (see FEE_RATES_MAX_AGE_S)."""
    return _fee_rates.get((user.pk, market.id), lambda: fee_rates_for(user=user, market=market))


def fee_rates_peek(*, user_id: int, market: Market) -> FeeRates | None:
    """The cached rates, or None when this process has none (load them with ``fee_rates_cached``)."""
    return _fee_rates.peek((user_id, market.id))


_FEE_CONTEXT = decimal.Context(prec=80, rounding=ROUND_DOWN)


def fee_amount(*, received: Decimal, rate: Decimal, precision: int) -> Decimal:
    """``received x rate`` rounded DOWN to ``precision`` decimal places: the fee to charge."""
    return _FEE_CONTEXT.multiply(received, rate).quantize(Decimal(1).scaleb(-precision), context=_FEE_CONTEXT)
