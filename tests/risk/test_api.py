"""The risk API end to end over HTTP: GET /api/v1/risk/limits (effective limits, usage, trading
state) and the RISK_* refusals of order placement as JSON errors with their status codes."""

from __future__ import annotations

import pytest

from risk.models import Scope
from risk.services import restriction_set, risk_limit_set
from tests.orders.conftest import ORDERS, bot_for, session_client
from tests.risk.conftest import drain, publish_and_consume

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sound_ledger")]

LIMITS = "/api/v1/risk/limits"


def limit_order(side: str, price: str, quantity: str) -> dict:
    return {"market": "BTC-USDT", "side": side, "type": "LIMIT", "price": price, "quantity": quantity}


def test_the_caller_sees_their_effective_limits_usage_and_state(live_market, traders, matcher):
    """A read key gets every limit with its scope (null when none applies), open orders, today's
    count and value, and the position with what open orders could add; never another user's."""
    alice, bob = traders[:2]
    risk_limit_set(scope=Scope.GLOBAL, values={"max_open_orders": 100, "price_band": "0.05"})
    risk_limit_set(scope=Scope.USER, user=alice, values={"max_open_orders": 7, "max_position": "10"})
    trader = bot_for(alice)
    trader.post(ORDERS, json=limit_order("BUY", "100", "2"))
    trader.post(ORDERS, json=limit_order("BUY", "99", "1"))
    bot_for(bob).post(ORDERS, json=limit_order("SELL", "100", "0.5"))
    drain(matcher)
    publish_and_consume()

    response = bot_for(alice, permissions=("read",)).get(LIMITS)
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["trading_status"], body["exchange_halted"], body["kyc_tier"]) == ("ACTIVE", False, 0)
    (btc,) = body["markets"]
    assert btc["market"] == "BTC-USDT" and btc["halted"] is False
    assert btc["limits"]["max_open_orders"] == {"value": "7", "scope": "USER"}
    assert btc["limits"]["price_band"] == {"value": "0.05", "scope": "GLOBAL"}
    assert btc["limits"]["max_daily_notional"] is None
    assert body["usage"] == {
        "open_orders": 2, "orders_today": 2, "notional_today": [{"asset": "USDT", "value": "299"}],
        "positions": [{"asset": "BTC", "net_today": "0.5", "open_buy": "2.5", "open_sell": "0"}],
    }
    assert bot_for(bob).get(LIMITS).json()["usage"]["positions"] == [
        {"asset": "BTC", "net_today": "-0.5", "open_buy": "0", "open_sell": "0"}]


def test_the_state_follows_the_kill_switches(live_market, traders):
    """Cancel-only and an exchange halt show at once (session user, the trading page's view)."""
    alice = traders[0]
    page = session_client(alice)
    restriction_set(kind="USER_CANCEL_ONLY", user=alice, reason="review")
    restriction_set(kind="EXCHANGE_HALTED", reason="incident")
    body = page.get(LIMITS, query={"market": "btc-usdt"}).json()
    assert (body["trading_status"], body["exchange_halted"], body["markets"][0]["halted"]) == ("CANCEL_ONLY", True,
                                                                                              False)


def test_bad_requests(live_market, traders, api_client):
    """Unknown market or parameter: 400 with a code; no credentials: 401."""
    client = bot_for(traders[0])
    unknown = client.get(LIMITS, query={"market": "DOGE-USDT"})
    assert (unknown.status_code, unknown.json()["code"]) == (400, "UNKNOWN_MARKET")
    assert client.get(LIMITS, query={"side": "BUY"}).json()["code"] == "UNKNOWN_FIELD"
    assert api_client.get(LIMITS).status_code == 401


def test_placement_refusals_are_json_errors_with_their_status(live_market, traders):
    """Over a per-order limit: 400; over a counter limit: 409; frozen: 403; each with its RISK_
    code, the field, and the limit's name, value and scope."""
    alice, bob = traders[:2]
    client = bot_for(alice)
    risk_limit_set(scope=Scope.MARKET, market=live_market, values={"max_order_quantity": "1", "max_open_orders": 1})
    too_big = client.post(ORDERS, json=limit_order("BUY", "100", "1.5"))
    assert too_big.status_code == 400
    assert too_big.json() == {"code": "RISK_MAX_ORDER_QUANTITY", "message": too_big.json()["message"],
                              "field": "quantity", "limit": "max_order_quantity", "limit_value": "1",
                              "scope": "MARKET"}
    assert client.post(ORDERS, json=limit_order("BUY", "100", "1")).status_code == 201
    second = client.post(ORDERS, json=limit_order("BUY", "99", "1"))
    assert (second.status_code, second.json()["code"]) == (409, "RISK_MAX_OPEN_ORDERS")
    restriction_set(kind="USER_FROZEN", user=bob, reason="fraud")
    frozen = bot_for(bob).post(ORDERS, json=limit_order("BUY", "99", "1"))
    assert (frozen.status_code, frozen.json()["code"]) == (403, "RISK_USER_FROZEN")
    cancel_all = bot_for(bob).delete(ORDERS, query={"market": "BTC-USDT"})
    assert (cancel_all.status_code, cancel_all.json()["code"]) == (403, "RISK_USER_FROZEN")


def test_the_endpoint_and_the_risk_codes_are_in_the_openapi_schema(api_client, db):
    """/api/schema/ documents GET /api/v1/risk/limits with its errors, and order placement lists
    the RISK_* refusals."""
    schema = api_client.get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/v1/risk/limits"]["get"]
    assert operation["operationId"] == "risk_limits"
    assert {"200", "400", "401", "429", "503"} <= set(operation["responses"])
    place = str(schema["paths"]["/api/v1/orders"]["post"]["responses"])
    for code in ("RISK_MAX_ORDER_QUANTITY", "RISK_MAX_OPEN_ORDERS", "RISK_USER_FROZEN", "RISK_ORDER_RATE"):
        assert code in place, code
