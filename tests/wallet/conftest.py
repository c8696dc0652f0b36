"""Wallet fixtures: two assets of different precision, a market, traders and an operator.

Money is set up through the services (``fund``), as in production.
"""

from decimal import Decimal

import pytest

from tests.factories import AssetFactory, MarketFactory, UserFactory
from wallet.models import Account, AccountKind
from wallet.services import deposit_credit


@pytest.fixture(autouse=True)
def _wallet_only_hold_checks():
    """Wallet tests hold funds under made-up "order:<n>" references with no
    order behind them: the orders app's check of "order:" holds (registered at
    startup, see orders/apps.py) is set aside during each wallet test and put
    back after it, so it neither fails these tests nor is lost for the others."""
    from wallet.invariants import _hold_checks

    order_check = _hold_checks.pop("order", None)
    yield
    if order_check is not None:
        _hold_checks["order"] = order_check


@pytest.fixture
def btc(db):
    return AssetFactory(code="BTC", name="Bitcoin", precision=8)


@pytest.fixture
def usdt(db):
    return AssetFactory(code="USDT", name="Tether USD", precision=6)


@pytest.fixture
def market(btc, usdt):
    return MarketFactory(base=btc, quote=usdt, step_size=Decimal("0.0001"), min_quantity=Decimal("0.0001"))


@pytest.fixture
def operator(db):
    return UserFactory(username="operator", is_staff=True, is_superuser=True)


@pytest.fixture
def alice(db):
    return UserFactory(username="alice")


@pytest.fixture
def bob(db):
    return UserFactory(username="bob")


_txids = iter(range(10**9))


@pytest.fixture
def fund(operator):
    """fund(user, asset, "100") credits a deposit from the operator."""

    def credit(user, asset, amount):
        deposit, _ = deposit_credit(
            user=user, asset=asset, amount=Decimal(amount), txid=f"fund-{next(_txids)}", actor=operator, memo="test funds"
        )
        return deposit

    return credit


def balance(user, asset, kind=AccountKind.AVAILABLE) -> Decimal:
    """The cached balance of one account (0 when the account does not exist yet)."""
    account = Account.objects.filter(user=user, asset=asset, kind=kind).first()
    return account.balance if account else Decimal(0)


def operator_balance(asset, kind) -> Decimal:
    account = Account.objects.filter(user=None, asset=asset, kind=kind).first()
    return account.balance if account else Decimal(0)


def balances(user, asset) -> tuple[Decimal, Decimal]:
    """(available, held) of ``user`` in ``asset``."""
    return balance(user, asset, AccountKind.AVAILABLE), balance(user, asset, AccountKind.HELD)
