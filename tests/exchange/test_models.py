"""Market rules that keep every trade's notional exact."""

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from exchange.models import Market
from tests.factories import AssetFactory, MarketFactory

pytestmark = pytest.mark.django_db


def _market(**overrides) -> Market:
    fields = dict(
        symbol="BTC-USDT",
        base=AssetFactory(code="BTC", precision=8),
        quote=AssetFactory(code="USDT", precision=6),
        tick_size=Decimal("0.01"),
        step_size=Decimal("0.0001"),
        min_quantity=Decimal("0.0001"),
        max_quantity=Decimal("100"),
        min_notional=Decimal("1"),
    )
    fields.update(overrides)
    return Market(**fields)


def test_valid_market_passes_clean():
    _market().full_clean()


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"step_size": Decimal("0.000000001")}, "step_size"),  # finer than BTC's 8 places
        ({"step_size": Decimal("0.00001")}, "tick_size"),  # 0.01 x 0.00001 = 1e-7, finer than USDT's 6 places
        ({"min_quantity": Decimal("0.00015")}, "min_quantity"),
        ({"symbol": "ETH-USDT"}, "symbol"),
    ],
)
def test_clean_rejects_units_the_ledger_cannot_hold(overrides, field):
    with pytest.raises(ValidationError) as error:
        _market(**overrides).full_clean()
    assert field in error.value.message_dict


@pytest.mark.parametrize(
    "overrides",
    [
        {"tick_size": Decimal(0)},
        {"max_quantity": Decimal("0.00001"), "min_quantity": Decimal("1")},
        {"taker_fee_rate": Decimal("1")},
        {"status": "OPEN"},
    ],
)
def test_database_constraints_hold_without_clean(overrides):
    """Constraints live in PostgreSQL, so raw writes cannot break them either."""
    with pytest.raises(IntegrityError), transaction.atomic():
        _market(**overrides).save()


def test_base_and_quote_must_differ():
    usdt = AssetFactory(code="USDT")
    with pytest.raises(IntegrityError), transaction.atomic():
        MarketFactory(base=usdt, quote=usdt, symbol="USDT-USDT")
