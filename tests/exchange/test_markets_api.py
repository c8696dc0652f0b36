"""The public reference-data API and the error format every API shares."""

from decimal import Decimal

import pytest

from exchange.models import Market
from tests.factories import AssetFactory, MarketFactory

pytestmark = pytest.mark.django_db


def test_markets_list_shows_trading_rules_as_exact_strings(api_client):
    """Rules come out as plain decimal strings (no float, no trailing zeros)."""
    MarketFactory()
    eth = AssetFactory(code="ETH", name="Ether")
    MarketFactory(base=eth, step_size=Decimal("0.0001"), min_quantity=Decimal("0.0001"), status=Market.Status.HALTED)

    response = api_client.get("/api/v1/markets")

    assert response.status_code == 200
    assert [m["symbol"] for m in response.json()] == ["BTC-USDT", "ETH-USDT"]
    btc = response.json()[0]
    assert btc == {
        "symbol": "BTC-USDT",
        "base": "BTC",
        "quote": "USDT",
        "status": "TRADING",
        "tick_size": "0.01",
        "step_size": "0.00001",
        "min_quantity": "0.00001",
        "max_quantity": "1000",
        "min_notional": "5",
        "maker_fee_rate": "0.001",
        "taker_fee_rate": "0.002",
    }


def test_markets_filter_by_status(api_client):
    MarketFactory()
    eth = AssetFactory(code="ETH", name="Ether")
    MarketFactory(base=eth, status=Market.Status.HALTED, step_size=Decimal("0.0001"), min_quantity=Decimal("0.0001"))

    response = api_client.get("/api/v1/markets", {"status": "HALTED"})

    assert [m["symbol"] for m in response.json()] == ["ETH-USDT"]


def test_invalid_filter_is_a_400_naming_the_field(api_client):
    response = api_client.get("/api/v1/markets", {"status": "OPEN"})

    assert response.status_code == 400
    body = response.json()
    assert (body["code"], body["field"]) == ("INVALID_CHOICE", "status")
    assert body["message"]


def test_market_detail_and_unknown_market(api_client):
    MarketFactory()

    assert api_client.get("/api/v1/markets/btc-usdt").json()["symbol"] == "BTC-USDT"
    missing = api_client.get("/api/v1/markets/DOGE-USDT")
    assert missing.status_code == 404
    assert missing.json() == {"code": "NOT_FOUND", "message": "Not found.", "field": None}


def test_errors_outside_views_are_json_too(api_client):
    """Unknown API paths and wrong methods get the same JSON error shape."""
    unknown = api_client.get("/api/v1/no-such-thing")
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "NOT_FOUND"

    wrong_method = api_client.post("/api/v1/markets", {}, format="json")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == "METHOD_NOT_ALLOWED"


def test_every_response_carries_a_request_id(api_client):
    """A sane caller-supplied id is echoed back; anything else is replaced."""
    echoed = api_client.get("/api/v1/assets", HTTP_X_REQUEST_ID="abc-123")
    assert echoed["X-Request-ID"] == "abc-123"
    replaced = api_client.get("/api/v1/assets", HTTP_X_REQUEST_ID="bad id\nwith newline")
    assert len(replaced["X-Request-ID"]) == 32


def test_openapi_schema_and_docs_are_served(api_client):
    schema = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/markets" in paths and "/api/v1/markets/{symbol}" in paths

    docs = api_client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content
    assert b"cdn.jsdelivr" not in docs.content, "Swagger UI must be served locally (sidecar), not from a CDN"
