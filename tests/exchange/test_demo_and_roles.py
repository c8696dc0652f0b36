"""The demo is idempotent and the back-office roles are least-privilege."""

from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from exchange.demo import demo_load
from exchange.models import Asset, Market
from exchange.roles import COMPLIANCE, OPERATORS, SUPPORT
from wallet.invariants import assert_ledger_sound
from wallet.models import Deposit
from wallet.selectors import balances_for_user

pytestmark = pytest.mark.django_db


def test_demo_load_twice_changes_nothing():
    demo_load(password="first-password-1")
    User = get_user_model()
    before = (Asset.objects.count(), Market.objects.count(), User.objects.count())
    hashes = dict(User.objects.values_list("username", "password"))

    demo_load(password="second-password-2")

    assert (Asset.objects.count(), Market.objects.count(), User.objects.count()) == before == (3, 2, 7)
    assert dict(User.objects.values_list("username", "password")) == hashes
    assert set(Market.objects.values_list("symbol", flat=True)) == {"BTC-USDT", "ETH-USDT"}
    operator = User.objects.get(username="operator")
    assert operator.is_superuser and operator.check_password("first-password-1")


def test_demo_traders_are_funded_once_through_the_ledger():
    """Funds arrive as operator deposits with fixed txids, so a second load credits nothing."""
    demo_load(password="first-password-1")
    demo_load(password="first-password-1")

    def balances(username):
        return {b.asset: (b.available, b.held) for b in balances_for_user(user=get_user_model().objects.get(
            username=username))}

    for username in ("alice", "bob"):
        assert balances(username) == {"BTC": (Decimal("2"), 0), "ETH": (Decimal("50"), 0), "USDT": (Decimal("100000"), 0)}
    # The demo market maker's float for quoting every market.
    assert balances("maker") == {"BTC": (Decimal("40"), 0), "ETH": (Decimal("800"), 0), "USDT": (Decimal("2000000"), 0)}
    assert Deposit.objects.count() == 9
    assert_ledger_sound()


def test_compliance_can_only_view():
    demo_load(password="first-password-1")
    compliance = get_user_model().objects.get(username="compliance")

    assert compliance.is_staff and not compliance.is_superuser
    assert compliance.has_perm("exchange.view_market")
    assert not compliance.has_perm("exchange.change_market")
    codenames = Group.objects.get(name=COMPLIANCE).permissions.values_list("codename", flat=True)
    assert codenames and all(code.startswith("view_") for code in codenames)


def test_demo_staff_hold_the_three_roles():
    """The demo has a second operator (for four-eyes approvals), a support and a compliance user, each in their
    role and none a superuser."""
    demo_load(password="first-password-1")
    User = get_user_model()

    for username, role in (("operator2", OPERATORS), ("support", SUPPORT), ("compliance", COMPLIANCE)):
        user = User.objects.get(username=username)
        assert user.is_staff and not user.is_superuser
        assert list(user.groups.values_list("name", flat=True)) == [role]
