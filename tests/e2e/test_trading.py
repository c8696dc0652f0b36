"""Trading end to end with real processes: daphne, one matcher per market,
PostgreSQL and Redis; two users trade through signed HTTP requests."""

from decimal import Decimal as D
from io import StringIO

import pytest
from django.core.management import call_command

from exchange.apikeys.services import api_key_create
from exchange.demo import demo_load
from tests.e2e.harness import SignedHttp, get_json, running_stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stack(redis_app):
    demo_load(password="e2e-password-123")  # BTC-USDT, ETH-USDT; alice and bob funded
    with running_stack() as running:
        yield running


def _client(stack, username: str) -> SignedHttp:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username=username)
    key, secret = api_key_create(user=user, label="e2e", permissions=["read", "trade"], ip_allowlist=[])
    return SignedHttp(stack.base_url, key.key_id, secret)


def _balances(client: SignedHttp) -> dict:
    status, rows = client.request("GET", "/api/v1/balances")
    assert status == 200, rows
    return {row["asset"]: (D(row["available"]), D(row["held"])) for row in rows}


def _settled(client: SignedHttp, order_id: int, statuses: set) -> dict:
    def check():
        status, order = client.request("GET", f"/api/v1/orders/{order_id}")
        return order if status == 200 and order["status"] in statuses else None

    return wait_for(check, timeout_s=15, what=f"order {order_id} to reach {statuses}")


def test_two_users_trade_over_signed_http(stack):
    alice, bob = _client(stack, "alice"), _client(stack, "bob")
    alice_before, bob_before = _balances(alice), _balances(bob)

    status, ask = alice.request("POST", "/api/v1/orders", json_body={
        "market": "BTC-USDT", "side": "SELL", "type": "LIMIT", "price": "65000", "quantity": "0.5",
        "client_order_id": "alice-1"})
    assert status == 201 and ask["status"] == "PENDING", ask
    status, bid = bob.request("POST", "/api/v1/orders", json_body={
        "market": "BTC-USDT", "side": "BUY", "type": "LIMIT", "price": "65100", "quantity": "0.3"})
    assert status == 201, bid
    status, eth = bob.request("POST", "/api/v1/orders", json_body={
        "market": "ETH-USDT", "side": "BUY", "type": "LIMIT", "price": "3000", "quantity": "1"})
    assert status == 201, eth
    status, market_buy = bob.request("POST", "/api/v1/orders", json_body={
        "market": "BTC-USDT", "side": "BUY", "type": "MARKET", "quote_quantity": "6500"})
    assert status == 201, market_buy

    bid = _settled(bob, bid["id"], {"FILLED"})
    market_buy = _settled(bob, market_buy["id"], {"FILLED"})
    ask = _settled(alice, ask["id"], {"FILLED", "PARTIALLY_FILLED"})
    _settled(bob, eth["id"], {"NEW"})
    # 0.3 at 65000 (price improvement for bob), then 6500 USDT buys 0.1 at 65000.
    assert (D(bid["filled_quantity"]), D(bid["average_price"])) == (D("0.3"), D(65000))
    assert (D(market_buy["filled_quantity"]), D(market_buy["filled_notional"])) == (D("0.1"), D(6500))
    assert (ask["status"], D(ask["filled_quantity"])) == ("PARTIALLY_FILLED", D("0.4"))

    alice_after, bob_after = _balances(alice), _balances(bob)
    # Fees: 0.1% each side, on what each receives. Alice sold 0.4 BTC for 26000 USDT as maker.
    assert alice_after["USDT"][0] - alice_before["USDT"][0] == D(26000) - D(26)
    assert alice_after["BTC"] == (alice_before["BTC"][0] - D("0.5"), D("0.1"))
    assert bob_after["BTC"][0] - bob_before["BTC"][0] == D("0.4") - D("0.0004")
    assert bob_after["USDT"] == (bob_before["USDT"][0] - D(26000) - D(3000), D(3000))

    status, mine = bob.request("GET", "/api/v1/trades/my", query={"market": "BTC-USDT"})
    assert status == 200 and len(mine["results"]) == 2
    _, public = get_json(f"{stack.base_url}/api/v1/trades?market=BTC-USDT")
    assert [t["quantity"] for t in public] == ["0.1", "0.3"]
    _, book = get_json(f"{stack.base_url}/api/v1/orderbook/BTC-USDT?depth=5")
    assert book["asks"] == [["65000", "0.1"]] and book["bids"] == []
    _, ticker = get_json(f"{stack.base_url}/api/v1/ticker/BTC-USDT")
    assert (ticker["last"], ticker["volume"], ticker["trade_count"]) == ("65000", "0.4", 2)

    out = StringIO()
    call_command("check_ledger", stdout=out)
    assert "ledger ok" in out.getvalue()
