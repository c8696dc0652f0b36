"""Private payloads are the REST representations, built by the publisher from
the batch (one round trip per batch for the rows it needs) and serialized once:
what a client receives on user.orders, user.trades and user.balances equals
what the REST API returns for the same order, fill and balances."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from exchange.live import consumers, protocol
from exchange.live.publish import dumps
from tests.live.conftest import place, receive_until
from tests.live.test_protocol import connect, run, subscribe

pytestmark = pytest.mark.django_db(transaction=True)


def test_private_channels_equal_rest_after_a_trade(channel_redis, traders, live_matcher, api_client):
    alice, bob, _ = traders

    async def scenario():
        wa = await connect(alice)
        await subscribe(wa, "user.orders", "user.trades", "user.balances")
        sell = await sync_to_async(place)(alice, "SELL", price="100.25", quantity="2")
        await sync_to_async(place)(bob, "BUY", price="101", quantity="0.75")
        await live_matcher.adrain()
        trade, before = await receive_until(wa, lambda m: m["channel"] == "user.trades")
        balances, after = await receive_until(wa, lambda m: m["channel"] == "user.balances" and m["sequence"] > 1)
        messages = before + after
        orders = [m for m in messages if m["channel"] == "user.orders" and m["data"]["id"] == sell.id]
        await wa.disconnect()
        return orders[-1]["data"], trade["data"], balances["data"]

    order, trade, balances = run(scenario)
    assert order["status"] == "PARTIALLY_FILLED" and trade["role"] == "MAKER"
    api_client.force_login(alice)
    assert api_client.get(f"/api/v1/orders/{order['id']}").json() == order
    assert api_client.get("/api/v1/trades/my").json()["results"][0] == trade
    rest_balances = {row["asset"]: row for row in api_client.get("/api/v1/balances").json()}
    assert balances == [rest_balances["BTC"], rest_balances["USDT"]]


def test_frames_are_the_envelope_around_the_payload_encoded_once():
    """The consumers' hand-built frames are exactly protocol.envelope() of the
    decoded payload, and a market frame is built once per message."""
    data = {"prev_sequence": 4, "bids": [["100.5", "0.1"]], "asks": [], "note": "é \" \\"}
    event = {"type": protocol.LAYER_BOOK, "symbol": "BTC-USDT", "prev_sequence": 4, "sequence": 9,
             "timestamp": 1764568800123, "data": dumps(data)}
    frame = consumers._market_frame(event, "orderbook.BTC-USDT")
    assert json.loads(frame) == protocol.envelope("update", "orderbook.BTC-USDT", 9, data, timestamp=1764568800123)
    event["data"] = "not used again"
    assert consumers._market_frame(event, "orderbook.BTC-USDT") is frame  # cached on the shared message
    order = {"id": 1, "price": None, "client_order_id": "ü-1"}
    private = consumers._private_frame("user.orders", 3, 1764568800999, dumps(order))
    assert json.loads(private) == protocol.envelope("update", "user.orders", 3, order, timestamp=1764568800999)


def test_live_messages_skip_channels_thread_hop(channel_redis, market, monkeypatch):
    """channels runs close_old_connections in the sync thread before every
    handler; the live layer's messages (one per batch per connection) skip
    that hop. Client messages keep it."""
    import channels.consumer

    from exchange.live.fanout import group_sender

    hops = []
    real = channels.consumer.aclose_old_connections

    async def counting():
        hops.append(1)
        await real()

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", counting)

    async def scenario():
        ws = await connect()
        await subscribe(ws, "trades.BTC-USDT")
        assert hops, "a client message goes through channels' dispatch"
        hops.clear()
        for sequence in (1, 2, 3):
            await sync_to_async(group_sender().send_to_groups)([("trades.BTC-USDT", {
                "type": protocol.LAYER_TRADES, "symbol": "BTC-USDT", "sequence": sequence, "timestamp": 1,
                "data": dumps([{"sequence": sequence}])})])
            update = await receive_until(ws, lambda m: m["channel"] == "trades.BTC-USDT")
            assert update[0]["sequence"] == sequence and update[0]["data"] == [{"sequence": sequence}]
        during_updates = len(hops)
        await ws.disconnect()
        return during_updates

    assert run(scenario) == 0


def test_messages_of_the_previous_version_still_render():
    """During a rolling deploy a matcher not yet restarted sends values, not
    JSON text: the web process renders them the same."""
    book = {"type": protocol.LAYER_BOOK, "symbol": "BTC-USDT", "prev_sequence": 4, "sequence": 9, "timestamp": 5,
            "bids": [["100", "1"]], "asks": []}
    assert json.loads(consumers._market_frame(book, "orderbook.BTC-USDT"))["data"] == {
        "prev_sequence": 4, "bids": [["100", "1"]], "asks": []}
    trades = {"type": protocol.LAYER_TRADES, "symbol": "BTC-USDT", "sequence": 9, "timestamp": 5,
              "trades": [{"sequence": 9, "price": "100"}]}
    assert json.loads(consumers._market_frame(trades, "trades.BTC-USDT"))["data"] == [{"sequence": 9, "price": "100"}]
    ticker = {"type": protocol.LAYER_TICKER, "symbol": "BTC-USDT", "sequence": 9, "timestamp": 5, "data": {"last": "1"}}
    assert json.loads(consumers._market_frame(ticker, "ticker.BTC-USDT"))["data"] == {"last": "1"}
    assert json.loads(consumers._private_frame("user.orders", 1, 5, {"id": 3}))["data"] == {"id": 3}


def test_an_order_set_aside_reaches_its_owner_as_rest_shows_it(channel_redis, traders, live_matcher, api_client):
    """A command set aside (matching/worker/poison.py) changes its order outside any
    batch: the owner still hears of it on user.orders, as REST shows it."""
    from orders.models import Order

    alice = traders[0]

    async def scenario():
        wa = await connect(alice)
        await subscribe(wa, "user.orders")
        bad = await sync_to_async(place)(alice, "SELL", price="100", quantity="1")
        # A price off the tick grid: every attempt to apply it raises, so it is set aside.
        await sync_to_async(lambda: Order.objects.filter(pk=bad.pk).update(price="100.005"))()
        await live_matcher.adrain()
        rejected, _ = await receive_until(
            wa, lambda m: m["channel"] == "user.orders" and m["data"]["id"] == bad.id
            and m["data"]["status"] == "REJECTED")
        await wa.disconnect()
        return rejected["data"]

    order = run(scenario)
    assert order["status_reason"] == "UNPROCESSABLE"
    api_client.force_login(alice)
    assert api_client.get(f"/api/v1/orders/{order['id']}").json() == order
