"""The WebSocket protocol (docs/LIVE.md) through channels' test communicator,
against the real ASGI application, the real channels-redis layer, a real
matcher and PostgreSQL.

Each test is a coroutine run with ``async_to_sync``: the calls it makes with
``sync_to_async`` (placing orders, draining the matcher) then run on the
test's own thread and database connection, as the fixtures do.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal as D

import pytest
from asgiref.sync import async_to_sync, sync_to_async

from exchange.apikeys import signing
from exchange.apikeys.services import api_key_create
from exchange.live import protocol
from exchange.live.fanout import group_sender
from tests.live.conftest import communicator, place, receive, receive_until

pytestmark = pytest.mark.django_db(transaction=True)


def run(coroutine_function):
    return async_to_sync(coroutine_function)()


async def connect(user=None):
    ws = await sync_to_async(communicator)(user)
    connected, _ = await ws.connect()
    assert connected
    return ws


async def subscribe(ws, *channels, request_id="s1") -> dict:
    await ws.send_json_to({"op": "subscribe", "channels": list(channels), "id": request_id})
    reply = await receive(ws)
    assert reply["type"] == "subscribed" and reply["id"] == request_id, reply
    return reply


def apply_update(book: dict, update: dict) -> None:
    for side in ("bids", "asks"):
        for price, quantity in update["data"][side]:
            if D(quantity) == 0:
                book[side].pop(D(price), None)
            else:
                book[side][D(price)] = D(quantity)


def as_book(snapshot: dict) -> dict:
    return {side: {D(p): D(q) for p, q in snapshot["data"][side]} for side in ("bids", "asks")}


def rest_book(api_client, symbol="BTC-USDT") -> dict:
    body = api_client.get(f"/api/v1/orderbook/{symbol}", {"depth": 100}).json()
    return {"sequence": body["sequence"],
            "book": {side: {D(p): D(q) for p, q in body[side]} for side in ("bids", "asks")}}


# ----------------------------------------------------------------- control


def test_ping_and_malformed_messages_get_stable_error_codes(channel_redis, market):
    """Control replies echo the request id; malformed input is an error message,
    never a closed connection or a server crash."""

    async def scenario():
        ws = await connect()
        await ws.send_json_to({"op": "ping", "id": 7})
        pong = await receive(ws)
        assert (pong["type"], pong["id"], pong["channel"], pong["sequence"]) == ("pong", 7, None, None)
        assert abs(pong["timestamp"] - time.time() * 1000) < 5000
        for frame, code in (
            ("not json", "BAD_MESSAGE"),
            ("[1, 2]", "BAD_MESSAGE"),
            (json.dumps({"op": "dance"}), "BAD_MESSAGE"),
            (json.dumps({"op": "ping", "id": {"nested": 1}}), "BAD_MESSAGE"),
            (json.dumps({"op": "subscribe", "channels": "orderbook.BTC-USDT"}), "BAD_MESSAGE"),
            (json.dumps({"op": "subscribe", "channels": []}), "BAD_MESSAGE"),
            (json.dumps({"op": "ping", "pad": "x" * 5000}), "BAD_MESSAGE"),
            (json.dumps({"op": "subscribe", "channels": ["orderbook.NOPE-USDT"]}), "UNKNOWN_CHANNEL"),
            (json.dumps({"op": "subscribe", "channels": ["candles.BTC-USDT"]}), "UNKNOWN_CHANNEL"),
            (json.dumps({"op": "subscribe", "channels": ["user.orders"]}), "AUTH_REQUIRED"),
            (json.dumps({"op": "resync", "channel": "orderbook.BTC-USDT"}), "BAD_MESSAGE"),  # not subscribed
        ):
            await ws.send_to(text_data=frame)
            reply = await receive(ws)
            assert reply["type"] == "error" and reply["data"]["code"] == code, (frame, reply)
        await ws.send_to(bytes_data=b"\x00\x01")
        assert (await receive(ws))["data"]["code"] == "BAD_MESSAGE"
        await ws.send_json_to({"op": "ping"})
        assert (await receive(ws))["type"] == "pong"  # still connected
        await ws.disconnect()

    run(scenario)


def test_rate_limit_and_subscription_limit(channel_redis, market):
    async def scenario():
        ws = await connect()
        for _ in range(protocol.RATE_BURST + 5):
            await ws.send_json_to({"op": "ping"})
        replies = [await receive(ws) for _ in range(protocol.RATE_BURST + 5)]
        assert any(r["type"] == "error" and r["data"]["code"] == "RATE_LIMITED" for r in replies)
        await ws.disconnect()

        ws = await connect()
        protocol_max = protocol.MAX_SUBSCRIPTIONS
        try:
            protocol.MAX_SUBSCRIPTIONS = 2
            await subscribe(ws, "trades.BTC-USDT", "ticker.BTC-USDT")
            await receive(ws)  # the ticker's first update
            await ws.send_json_to({"op": "subscribe", "channels": ["orderbook.BTC-USDT"]})
            assert (await receive(ws))["data"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
        finally:
            protocol.MAX_SUBSCRIPTIONS = protocol_max
        await ws.disconnect()

    run(scenario)


# ----------------------------------------------------------------- auth


def test_session_user_gets_own_orders_as_the_rest_api_shows_them(channel_redis, traders, live_matcher, api_client):
    """Session cookie auth at connect; user.orders carries the REST
    representation: PENDING from the API on placement, then NEW from the matcher."""
    matcher = live_matcher
    alice = traders[0]

    async def scenario():
        ws = await connect(alice)
        await subscribe(ws, "user.orders", "user.balances")
        order = await sync_to_async(place)(alice, "BUY", price="100", quantity="1")
        pending, _ = await receive_until(ws, lambda m: m["channel"] == "user.orders")
        assert pending["type"] == "update" and pending["data"]["id"] == order.id
        assert pending["data"]["status"] == "PENDING"
        held, _ = await receive_until(ws, lambda m: m["channel"] == "user.balances")
        usdt = {row["asset"]: row for row in held["data"]}["USDT"]
        assert D(usdt["held"]) == D("100") and D(usdt["total"]) == D("1000000")
        await matcher.adrain()
        new, _ = await receive_until(ws, lambda m: m["channel"] == "user.orders")
        assert new["data"]["status"] == "NEW" and new["sequence"] == pending["sequence"] + 1
        return new

    new = run(scenario)
    api_client.force_login(alice)
    assert api_client.get(f"/api/v1/orders/{new['data']['id']}").json() == new["data"]


def _auth_message(key_id, secret, *, timestamp_ms=None, signature=None) -> dict:
    headers = signing.signed_headers(key_id, secret, "GET", "/ws/", timestamp_ms=timestamp_ms)
    return {"op": "auth", "id": "a", "api_key": key_id, "timestamp": int(headers["X-TIMESTAMP"]),
            "recvWindow": int(headers["X-RECV-WINDOW"]), "signature": signature or headers["X-SIGNATURE"]}


def test_signed_auth_message(channel_redis, traders):
    """AUTH signs "GET /ws/" with the REST scheme: a good signature
    authenticates; a bad one, a stale timestamp or a replay do not."""
    alice = traders[0]
    key, secret = api_key_create(user=alice, label="ws", permissions=["read"], ip_allowlist=[])

    async def scenario():
        ws = await connect()
        await ws.send_json_to(_auth_message(key.key_id, secret, signature="0" * 64))
        bad = await receive(ws)
        assert bad["data"]["code"] == "AUTH_FAILED" and bad["data"]["reason"] == "INVALID_SIGNATURE"
        stale = _auth_message(key.key_id, secret, timestamp_ms=time.time_ns() // 1_000_000 - 60_000)
        await ws.send_json_to(stale)
        reply = await receive(ws)
        assert reply["data"]["code"] == "AUTH_FAILED" and reply["data"]["reason"] == "TIMESTAMP_OUTSIDE_RECV_WINDOW"
        await ws.send_json_to({"op": "subscribe", "channels": ["user.orders"]})
        assert (await receive(ws))["data"]["code"] == "AUTH_REQUIRED"  # still anonymous

        good = _auth_message(key.key_id, secret)
        await ws.send_json_to(good)
        reply = await receive(ws)
        assert (reply["type"], reply["id"], reply["data"]["user_id"]) == ("authenticated", "a", alice.pk)
        await ws.send_json_to(good)  # the same signature again is a replay
        assert (await receive(ws))["data"]["reason"] == "REPLAYED_REQUEST"
        await subscribe(ws, "user.orders")
        await ws.disconnect()

    run(scenario)


# ----------------------------------------------------------------- private isolation


def test_private_channels_carry_only_the_connections_user(channel_redis, traders, live_matcher):
    """Alice and Bob trade with each other: each sees their own side of the
    trade, their own orders and balances, never the other's; a channel name
    naming a user id does not exist."""
    matcher = live_matcher
    alice, bob, carol = traders

    async def scenario():
        wa, wb, wc = await connect(alice), await connect(bob), await connect(carol)
        for ws in (wa, wb, wc):
            await subscribe(ws, "user.orders", "user.trades", "user.balances")
        await wc.send_json_to({"op": "subscribe", "channels": [f"user.{alice.pk}"]})
        assert (await receive(wc))["data"]["code"] == "UNKNOWN_CHANNEL"
        sell = await sync_to_async(place)(alice, "SELL", price="100", quantity="2")
        buy = await sync_to_async(place)(bob, "BUY", price="100", quantity="1")
        await matcher.adrain()
        got = {}
        for name, ws in (("alice", wa), ("bob", wb)):
            trade, before = await receive_until(ws, lambda m: m["channel"] == "user.trades")
            got[name] = (trade, before)
        alice_trade, alice_before = got["alice"]
        bob_trade, bob_before = got["bob"]
        assert (alice_trade["data"]["side"], alice_trade["data"]["role"], alice_trade["data"]["order_id"]) == (
            "SELL", "MAKER", sell.id)
        assert (bob_trade["data"]["side"], bob_trade["data"]["role"], bob_trade["data"]["order_id"]) == (
            "BUY", "TAKER", buy.id)
        alice_orders = {m["data"]["id"] for m in alice_before if m["channel"] == "user.orders"}
        bob_orders = {m["data"]["id"] for m in bob_before if m["channel"] == "user.orders"}
        assert alice_orders == {sell.id} and bob_orders == {buy.id}
        assert await wc.receive_nothing(timeout=0.5)
        for ws in (wa, wb, wc):
            await ws.disconnect()

    run(scenario)


# ----------------------------------------------------------------- order book


def test_snapshot_then_contiguous_updates_match_the_rest_book(channel_redis, traders, live_matcher, api_client):
    """The snapshot on subscribe and the updates after it chain by
    prev_sequence, and applying them gives the REST order book."""
    matcher = live_matcher
    alice, bob, _ = traders
    place(alice, "SELL", price="101", quantity="1")
    matcher.drain()

    async def scenario():
        ws = await connect()
        await subscribe(ws, "orderbook.BTC-USDT", "trades.BTC-USDT")
        snapshot = await receive(ws)
        assert snapshot["type"] == "snapshot" and snapshot["channel"] == "orderbook.BTC-USDT"
        book, last = as_book(snapshot), snapshot["sequence"]
        assert book["asks"] == {D(101): D(1)}
        await sync_to_async(place)(bob, "BUY", price="99", quantity="2")
        await matcher.adrain()
        await sync_to_async(place)(bob, "BUY", price="101", quantity="0.4")
        await sync_to_async(place)(alice, "SELL", price="102", quantity="3")
        await matcher.adrain()
        trades = []
        rest = await sync_to_async(rest_book)(api_client)
        while last < rest["sequence"]:
            message = await receive(ws)
            if message["channel"] == "trades.BTC-USDT":
                trades.extend(message["data"])
                continue
            assert message["type"] == "update" and message["data"]["prev_sequence"] == last, message
            apply_update(book, message)
            last = message["sequence"]
        assert last == rest["sequence"] and book == rest["book"]
        if not trades:
            trades = (await receive_until(ws, lambda m: m["channel"] == "trades.BTC-USDT"))[0]["data"]
        assert [(t["price"], t["quantity"], t["taker_side"]) for t in trades] == [("101", "0.4", "BUY")]
        await ws.disconnect()

    run(scenario)


def test_resync_returns_a_snapshot_that_lines_up(channel_redis, traders, live_matcher):
    matcher = live_matcher
    alice, bob, _ = traders

    async def scenario():
        ws = await connect()
        await subscribe(ws, "orderbook.BTC-USDT")
        first = await receive(ws)
        await sync_to_async(place)(alice, "SELL", price="105", quantity="1")
        await matcher.adrain()
        update = await receive(ws)
        assert update["data"]["prev_sequence"] == first["sequence"]
        await ws.send_json_to({"op": "resync", "channel": "orderbook.BTC-USDT", "id": 9})
        snapshot = await receive(ws)
        assert (snapshot["type"], snapshot["id"], snapshot["sequence"]) == ("snapshot", 9, update["sequence"])
        assert snapshot["data"]["asks"] == [["105", "1"]]
        await sync_to_async(place)(bob, "BUY", price="95", quantity="1")
        await matcher.adrain()
        after = await receive(ws)
        assert after["data"]["prev_sequence"] == snapshot["sequence"]
        await ws.disconnect()

    run(scenario)


def test_a_lost_update_makes_the_server_send_a_fresh_snapshot(channel_redis, traders, live_matcher, api_client):
    """One batch's live messages are lost (as when the channel layer drops
    them for a receiver over capacity); the next update no longer chains, so
    the consumer sends a snapshot instead, and the chain continues from it."""
    matcher = live_matcher
    alice, bob, _ = traders

    async def scenario():
        ws = await connect()
        await subscribe(ws, "orderbook.BTC-USDT")
        first = await receive(ws)
        real_publish = matcher.matcher.live.publish
        matcher.matcher.live.publish = lambda result, **kwargs: None  # this batch's messages never arrive
        await sync_to_async(place)(alice, "SELL", price="110", quantity="1")
        await matcher.adrain()
        matcher.matcher.live.publish = real_publish
        assert await ws.receive_nothing(timeout=0.3)
        await sync_to_async(place)(bob, "BUY", price="90", quantity="1")
        await matcher.adrain()
        fresh = await receive(ws)
        assert fresh["type"] == "snapshot" and fresh["sequence"] > first["sequence"] + 1
        rest = await sync_to_async(rest_book)(api_client)
        assert (fresh["sequence"], as_book(fresh)) == (rest["sequence"], rest["book"])
        await sync_to_async(place)(bob, "BUY", price="91", quantity="1")
        await matcher.adrain()
        update = await receive(ws)
        assert update["type"] == "update" and update["data"]["prev_sequence"] == fresh["sequence"]
        await ws.disconnect()

    run(scenario)


def test_unsubscribe_stops_delivery_and_ticker_updates_after_a_trade(channel_redis, traders, live_matcher):
    matcher = live_matcher
    alice, bob, _ = traders

    async def scenario():
        ws = await connect()
        await subscribe(ws, "orderbook.BTC-USDT", "ticker.BTC-USDT")
        assert (await receive(ws))["type"] == "snapshot"
        initial = await receive(ws)
        assert initial["channel"] == "ticker.BTC-USDT" and initial["data"]["last"] is None
        await ws.send_json_to({"op": "unsubscribe", "channels": ["orderbook.BTC-USDT"], "id": 2})
        reply = await receive(ws)
        assert (reply["type"], reply["data"]["channels"]) == ("unsubscribed", ["orderbook.BTC-USDT"])
        await sync_to_async(place)(alice, "SELL", price="100", quantity="1")
        await sync_to_async(place)(bob, "BUY", price="100", quantity="1")
        await matcher.adrain()
        ticker, before = await receive_until(ws, lambda m: m["channel"] == "ticker.BTC-USDT" and m["data"]["last"])
        assert not [m for m in before if m["channel"] == "orderbook.BTC-USDT"]
        assert (ticker["data"]["last"], ticker["data"]["volume"], ticker["data"]["symbol"]) == ("100", "1", "BTC-USDT")
        assert set(ticker["data"]) >= {"open", "high", "low", "quote_volume", "change", "change_percent",
                                       "best_bid", "best_ask"}
        await ws.disconnect()

    run(scenario)


def test_matching_goes_on_when_the_channel_layer_is_down(channel_redis, traders, live_matcher, settings, tmp_path):
    """Publishing is best-effort: with the channel layer's Redis unreachable
    the matcher still applies and commits every batch."""
    matcher = live_matcher
    alice, bob, _ = traders
    settings.REDIS_CHANNELS_URL = f"unix://{tmp_path}/none.sock"
    group_sender.cache_clear()
    sell = place(alice, "SELL", price="100", quantity="1")
    place(bob, "BUY", price="100", quantity="1")
    matcher.drain()
    sell.refresh_from_db()
    assert sell.status == "FILLED"
