"""Query parameters are read strictly: a blank filter, a limit that is not a
whole number from 1 up, or a blank cursor is a 400 with the field named, never
a silently wider or differently sized answer (found by the contract test)."""

import pytest
from rest_framework.test import APIClient

from tests.factories import MarketFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def client(redis_app):
    MarketFactory()
    client = APIClient()
    client.force_login(UserFactory())
    return client


@pytest.mark.parametrize("path, query, code, field", [
    ("/api/v1/orders", "status=", "INVALID_CHOICE", "status"),
    ("/api/v1/orders", "market=", "BLANK", "market"),
    ("/api/v1/orders", "limit=abc", "INVALID", "limit"),
    ("/api/v1/orders", "limit=0", "MIN_VALUE", "limit"),
    ("/api/v1/orders", "cursor=", "BLANK", "cursor"),
    ("/api/v1/trades/my", "cursor=", "BLANK", "cursor"),
    ("/api/v1/markets", "status=", "INVALID_CHOICE", "status"),
    ("/api/v1/deposits", "limit=%C3%82", "INVALID", "limit"),
    ("/api/v1/deposits", "limit=-1", "INVALID", "limit"),
    ("/api/v1/deposits", "cursor=", "INVALID_CURSOR", "cursor"),
    ("/api/v1/ledger", "account_kind=", "INVALID_CHOICE", "account_kind"),
    ("/api/v1/withdrawals", "asset=", "BLANK", "asset"),
    ("/api/v1/risk/limits", "market=", "BLANK", "market"),
])
def test_bad_query_values_are_refused(client, path, query, code, field):
    response = client.get(f"{path}?{query}")
    assert response.status_code == 400, response.content
    assert (response.json()["code"], response.json()["field"]) == (code, field)


def test_a_limit_above_the_maximum_is_capped_and_a_good_one_is_kept(client):
    assert client.get("/api/v1/deposits?limit=5000").status_code == 200
    assert client.get("/api/v1/orders?limit=1&status=OPEN").status_code == 200
    assert client.get("/api/v1/markets?status=TRADING").json()[0]["status"] == "TRADING"
