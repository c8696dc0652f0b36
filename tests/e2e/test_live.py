"""Live updates end to end: daphne and the matchers as real processes, a real
WebSocket client (the ``websockets`` package), orders placed through the
signed HTTP API."""

from __future__ import annotations

import json
import time
from decimal import Decimal as D

import pytest
from websockets.sync.client import connect

from exchange.apikeys import signing
from exchange.apikeys.services import api_key_create
from exchange.demo import demo_load
from tests.e2e.harness import SignedHttp, get_json, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stack(redis_app):
    demo_load(password="e2e-password-123")
    with running_stack(symbols=("BTC-USDT",)) as running:
        yield running


def _key(username: str):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username=username)
    return api_key_create(user=user, label="e2e-ws", permissions=["read", "trade"], ip_allowlist=[])


class Client:
    """A WebSocket client that keeps every message it receives, in order."""

    def __init__(self, url: str):
        self.ws = connect(url, open_timeout=10).__enter__()
        self.seen: list[dict] = []

    def send(self, message: dict) -> None:
        self.ws.send(json.dumps(message))

    def next(self, predicate=lambda m: True, timeout_s: float = 10) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no expected message; last seen: {self.seen[-3:]}"
            message = json.loads(self.ws.recv(timeout=remaining))
            self.seen.append(message)
            if predicate(message):
                return message

    def auth(self, key_id: str, secret: str) -> None:
        headers = signing.signed_headers(key_id, secret, "GET", "/ws/")
        self.send({"op": "auth", "id": "auth", "api_key": key_id, "timestamp": int(headers["X-TIMESTAMP"]),
                   "recvWindow": int(headers["X-RECV-WINDOW"]), "signature": headers["X-SIGNATURE"]})
        reply = self.next(lambda m: m.get("id") == "auth")
        assert reply["type"] == "authenticated", reply


def _apply(book: dict, data: dict) -> None:
    for side in ("bids", "asks"):
        for price, quantity in data[side]:
            if D(quantity) == 0:
                book[side].pop(D(price), None)
            else:
                book[side][D(price)] = D(quantity)


def _snapshot_book(message: dict) -> dict:
    return {side: {D(p): D(q) for p, q in message["data"][side]} for side in ("bids", "asks")}


def test_orders_over_http_appear_on_websocket_and_a_gap_resyncs_to_the_rest_book(stack):
    alice_key, alice_secret = _key("alice")
    bob_key, bob_secret = _key("bob")
    alice = SignedHttp(stack.base_url, alice_key.key_id, alice_secret)
    bob = SignedHttp(stack.base_url, bob_key.key_id, bob_secret)
    ws_url = f"ws://127.0.0.1:{stack.port}/ws/"

    watcher = Client(ws_url)  # anonymous: market data only
    watcher.send({"op": "subscribe", "channels": ["orderbook.BTC-USDT", "trades.BTC-USDT"], "id": 1})
    assert watcher.next(lambda m: m.get("id") == 1)["type"] == "subscribed"
    snapshot = watcher.next(lambda m: m["type"] == "snapshot")
    book, last = _snapshot_book(snapshot), snapshot["sequence"]

    trader = Client(ws_url)
    trader.auth(bob_key.key_id, bob_secret)
    trader.send({"op": "subscribe", "channels": ["user.orders", "user.trades"], "id": 2})
    assert trader.next(lambda m: m.get("id") == 2)["type"] == "subscribed"

    placed = []
    for price, quantity in (("64000", "0.2"), ("64100", "0.1"), ("64200", "0.3")):
        status, order = alice.request("POST", "/api/v1/orders", json_body={
            "market": "BTC-USDT", "side": "SELL", "type": "LIMIT", "price": price, "quantity": quantity})
        assert status == 201, order
        placed.append(order["id"])
    status, bid = bob.request("POST", "/api/v1/orders", json_body={
        "market": "BTC-USDT", "side": "BUY", "type": "LIMIT", "price": "64100", "quantity": "0.25"})
    assert status == 201, bid

    # Bob's own order: PENDING, then FILLED; and his trades, on his private channels.
    filled = trader.next(lambda m: m["channel"] == "user.orders" and m["data"]["status"] == "FILLED")
    assert filled["data"]["id"] == bid["id"] and D(filled["data"]["filled_quantity"]) == D("0.25")
    statuses = [m["data"]["status"] for m in trader.seen if m["channel"] == "user.orders"]
    assert statuses[0] == "PENDING" and {m["data"]["id"] for m in trader.seen if m["channel"] == "user.orders"} == {
        bid["id"]}
    trades = [m["data"] for m in trader.seen if m["channel"] == "user.trades"]
    while sum(D(t["quantity"]) for t in trades) < D("0.25"):
        trades.append(trader.next(lambda m: m["channel"] == "user.trades")["data"])
    assert [(t["price"], t["quantity"], t["role"]) for t in trades] == [
        ("64000", "0.2", "TAKER"), ("64100", "0.05", "TAKER")]

    # The watcher's updates chain from the snapshot with contiguous sequences.
    _, rest = get_json(f"{stack.base_url}/api/v1/orderbook/BTC-USDT?depth=100")
    while last < rest["sequence"]:
        message = watcher.next(lambda m: m["channel"] == "orderbook.BTC-USDT")
        assert message["type"] == "update" and message["data"]["prev_sequence"] == last, message
        _apply(book, message["data"])
        last = message["sequence"]
    assert book == {side: {D(p): D(q) for p, q in rest[side]} for side in ("bids", "asks")}
    public_trades = [t for m in watcher.seen if m["channel"] == "trades.BTC-USDT" for t in m["data"]]
    while sum(D(t["quantity"]) for t in public_trades) < D("0.25"):
        public_trades.extend(watcher.next(lambda m: m["channel"] == "trades.BTC-USDT")["data"])
    assert [(t["price"], t["quantity"], t["taker_side"]) for t in public_trades] == [
        ("64000", "0.2", "BUY"), ("64100", "0.05", "BUY")]

    # A deliberate gap: the client drops the next update, sees the one after
    # it does not chain, asks for a resync and converges to the REST book.
    alice.request("POST", "/api/v1/orders", json_body={
        "market": "BTC-USDT", "side": "SELL", "type": "LIMIT", "price": "64500", "quantity": "1"})
    dropped = watcher.next(lambda m: m["channel"] == "orderbook.BTC-USDT")
    assert dropped["data"]["prev_sequence"] == last
    bob.request("POST", "/api/v1/orders", json_body={
        "market": "BTC-USDT", "side": "BUY", "type": "LIMIT", "price": "63000", "quantity": "1"})
    after_gap = watcher.next(lambda m: m["channel"] == "orderbook.BTC-USDT")
    assert after_gap["data"]["prev_sequence"] != last  # the client sees its gap
    watcher.send({"op": "resync", "channel": "orderbook.BTC-USDT", "id": "r"})
    fresh = watcher.next(lambda m: m.get("id") == "r")
    assert fresh["type"] == "snapshot" and fresh["sequence"] >= after_gap["sequence"]
    book, last = _snapshot_book(fresh), fresh["sequence"]
    status, _ = alice.request("DELETE", f"/api/v1/orders/{placed[2]}")  # one more change after the resync
    assert status == 202
    message = watcher.next(lambda m: m["channel"] == "orderbook.BTC-USDT" and m["type"] == "update")
    assert message["data"]["prev_sequence"] == last
    _apply(book, message["data"])
    last = message["sequence"]
    _, rest = get_json(f"{stack.base_url}/api/v1/orderbook/BTC-USDT?depth=100")
    assert rest["sequence"] == last
    assert book == {side: {D(p): D(q) for p, q in rest[side]} for side in ("bids", "asks")}
    watcher.ws.close()
    trader.ws.close()
