"""Back-office fixtures: staff members of each role, signed in past the second factor as needed."""

from decimal import Decimal as D

import pytest

from exchange.roles import COMPLIANCE, OPERATORS, SUPPORT, roles_sync
from tests.factories import UserFactory
from tests.wallet.conftest import alice, bob, btc, fund, market, operator, usdt  # noqa: F401  (fixtures)


@pytest.fixture
def member(db):
    """``member(ROLE, username)``: a new staff member (not a superuser) of a back-office role."""

    def make(role: str, username: str):
        user = UserFactory(username=username, is_staff=True)
        user.groups.add(roles_sync()[role])
        return user

    return make


@pytest.fixture
def olga(member):
    return member(OPERATORS, "olga")


@pytest.fixture
def oscar(member):
    return member(OPERATORS, "oscar")


@pytest.fixture
def sam(member):
    return member(SUPPORT, "sam")


@pytest.fixture
def carla(member):
    return member(COMPLIANCE, "carla")


@pytest.fixture
def threshold(settings):
    """``threshold("1")``: the four-eyes threshold of every asset."""

    def set_to(amount: str):
        settings.MONEY_FOUR_EYES_THRESHOLD_DEFAULT = D(amount)
        settings.MONEY_FOUR_EYES_THRESHOLDS = {}

    set_to("1")
    return set_to
