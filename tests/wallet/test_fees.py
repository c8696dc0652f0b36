"""The fee schedule: override for the market, then for all markets, then the best VIP tier
by 30-day volume (never above the market's rates), then the market's own rates."""

from decimal import Decimal as D

import pytest

from tests.factories import AssetFactory, MarketFactory
from wallet.fees import FeeRates, fee_amount, fee_rates_for, register_volume_30d_provider
from wallet.models import FeeOverride, FeeTier

pytestmark = pytest.mark.django_db


@pytest.fixture
def volumes():
    """Register a 30-day volume provider backed by a dict; unregister afterwards."""
    table: dict[int, D] = {}
    calls = []

    def provider(*, user, asset_code):
        calls.append(asset_code)
        return table.get(user.pk, D(0))

    register_volume_30d_provider(provider)
    yield table, calls
    register_volume_30d_provider(None)


def test_market_rates_when_nothing_is_configured(market, alice):
    """No override and no tier: the market's own maker and taker rates."""
    assert fee_rates_for(user=alice, market=market) == FeeRates(maker=D("0.001"), taker=D("0.002"))


def test_vip_tiers_by_30_day_volume(market, alice, bob, volumes):
    """The registered provider's 30-day volume picks the highest tier reached, capped at the market's rates."""
    table, calls = volumes
    FeeTier.objects.create(name="VIP 1", volume_30d_min=D("100000"), maker_fee_rate=D("0.0008"),
                           taker_fee_rate=D("0.0015"))
    FeeTier.objects.create(name="VIP 2", volume_30d_min=D("1000000"), maker_fee_rate=D("0.0005"),
                           taker_fee_rate=D("0.003"))
    table[alice.pk] = D("2500000")
    table[bob.pk] = D("99999.99")

    # The highest tier reached wins, but a tier never charges more than the market (taker 0.002 here).
    assert fee_rates_for(user=alice, market=market) == FeeRates(maker=D("0.0005"), taker=D("0.002"))
    assert fee_rates_for(user=bob, market=market) == FeeRates(maker=D("0.001"), taker=D("0.002"))
    table[bob.pk] = D("100000")
    assert fee_rates_for(user=bob, market=market) == FeeRates(maker=D("0.0008"), taker=D("0.0015"))
    assert set(calls) == {"USDT"}


def test_overrides_beat_tiers_and_a_market_override_beats_a_global_one(market, alice, volumes):
    """A user's override wins over tiers; one for the market wins over one for all markets."""
    table, _ = volumes
    table[alice.pk] = D("10000000")
    FeeTier.objects.create(name="VIP", volume_30d_min=D("0"), maker_fee_rate=D("0.0001"), taker_fee_rate=D("0.0001"))
    FeeOverride.objects.create(user=alice, market=None, maker_fee_rate=D("0.0003"), taker_fee_rate=D("0.0004"))
    eth_market = MarketFactory(base=AssetFactory(code="ETH"), quote=market.quote)

    assert fee_rates_for(user=alice, market=market) == FeeRates(maker=D("0.0003"), taker=D("0.0004"))
    FeeOverride.objects.create(user=alice, market=market, maker_fee_rate=D("0"), taker_fee_rate=D("0.0002"))
    assert fee_rates_for(user=alice, market=market) == FeeRates(maker=D("0"), taker=D("0.0002"))
    assert fee_rates_for(user=alice, market=eth_market) == FeeRates(maker=D("0.0003"), taker=D("0.0004"))


@pytest.mark.parametrize(
    "received, rate, precision, fee",
    [
        (D("0.5"), D("0.001"), 8, D("0.0005")),
        (D("0.00001999"), D("0.001"), 8, D("0.00000001")),  # 0.00000001999 rounds down
        (D("0.00000999"), D("0.001"), 8, D("0")),  # a fee below one unit is not charged
        (D("12345.678901"), D("0.002"), 6, D("24.691357")),  # 24.691357802 rounds down
        (D("99999999999999999999.999999"), D("0.000001"), 6, D("99999999999999.999999")),  # no float, no overflow
    ],
)
def test_fee_amount_rounds_down_to_the_asset_unit(received, rate, precision, fee):
    """Rounding down means the fee never exceeds rate x amount: no rounding creates money."""
    assert fee_amount(received=received, rate=rate, precision=precision) == fee
