"""The trading API end to end over HTTP: placement of every order type, idempotency,
lists and pagination, ownership, cancel and amend through the matcher, own
trades, public market data, API key permissions and dependencies that are down.

Bots sign their requests with an API key (``bot_for``); the trading page uses a
session (``session_client``). Every request goes through the real stack:
authentication, throttling (Redis), the services, PostgreSQL, the market's
command stream; ``drain(matcher)`` then applies what was enqueued.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from decimal import Decimal as D

import pytest
from django.db import connection

from exchange.core.redis import get_redis
from matching import stream
from orders.models import Order, OrderAmendment, Trade
from tests.orders.conftest import ORDERS, balance, bot_for, drain, heartbeat, session_client, writes
from wallet.models import Hold

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sound_ledger")]

FUNDS_USDT, FUNDS_BTC = D(1_000_000), D(100)


def limit(side: str, price, quantity, **extra) -> dict:
    return {"market": "BTC-USDT", "side": side, "type": "LIMIT", "price": str(price), "quantity": str(quantity), **extra}


def placed(client, body: dict) -> dict:
    """POST /orders, which must accept the order as a new PENDING one."""
    response = client.post(ORDERS, json=body)
    assert response.status_code == 201, response.content
    order = response.json()
    assert order["status"] == "PENDING"
    return order


def fetched(client, order_id: int) -> dict:
    response = client.get(f"{ORDERS}/{order_id}")
    assert response.status_code == 200, response.content
    return response.json()


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert body["code"] == code and body["message"], body
    return body


# ------------------------------------------------------------------ placing


def test_a_bot_places_a_limit_order_that_is_held_then_rests_in_the_book(traders, matcher):
    """A key-signed LIMIT buy answers 201 with the whole order as PENDING and
    its price x quantity held at once (GET /balances); once the matcher has
    applied it, GET /orders/{id} shows it NEW and the order book lists it."""
    alice = traders[0]
    bot = bot_for(alice)

    order = placed(bot, limit("BUY", "100.5", "1.5", client_order_id="bot-1:a"))

    assert order == {
        "id": order["id"], "client_order_id": "bot-1:a", "market": "BTC-USDT", "side": "BUY", "type": "LIMIT",
        "time_in_force": "GTC", "price": "100.5", "stop_price": None, "quantity": "1.5", "quote_quantity": None,
        "filled_quantity": "0", "filled_notional": "0", "average_price": None, "fee_total": "0", "fee_asset": "BTC",
        "status": "PENDING", "status_reason": "", "stp_mode": "EXPIRE_TAKER", "cancel_requested": False,
        "created_at": order["created_at"], "updated_at": order["updated_at"],
    }
    assert balance(bot, "USDT") == (FUNDS_USDT - D("150.75"), D("150.75"))
    row = Order.objects.get(pk=order["id"])
    assert (row.client_ip, row.api_key.key_id) == ("127.0.0.1", bot.key_id), "who placed it is recorded"

    drain(matcher)

    assert fetched(bot, order["id"])["status"] == "NEW"
    assert bot.get("/api/v1/orderbook/BTC-USDT").json()["bids"] == [["100.5", "1.5"]]


def test_market_orders_by_quantity_and_by_quote_hold_then_fill(traders, matcher):
    """A MARKET buy by quantity holds quantity x best ask x (1 + band) and a
    MARKET buy by quote_quantity holds that amount; after the matcher runs
    both are FILLED at the book's prices and whatever was not spent is free
    again. A MARKET sell by quantity holds exactly its base."""
    alice, bob, carol = traders
    seller = session_client(alice)
    placed(seller, limit("SELL", 100, 1))
    placed(seller, limit("SELL", 102, 1))
    drain(matcher)
    bob_bot, carol_bot = bot_for(bob), bot_for(carol)

    by_quantity = placed(bob_bot, {"market": "BTC-USDT", "side": "BUY", "type": "MARKET", "quantity": "1"})
    by_quote = placed(carol_bot, {"market": "BTC-USDT", "side": "BUY", "type": "MARKET", "quote_quantity": "51"})

    assert (by_quantity["quantity"], by_quantity["quote_quantity"], by_quantity["time_in_force"]) == ("1", None, None)
    assert (by_quote["quantity"], by_quote["quote_quantity"]) == (None, "51")
    assert balance(bob_bot, "USDT") == (FUNDS_USDT - 150, D(150)), "1 x best ask 100 x 1.5"
    assert balance(carol_bot, "USDT") == (FUNDS_USDT - 51, D(51))

    drain(matcher)

    bob_order, carol_order = fetched(bob_bot, by_quantity["id"]), fetched(carol_bot, by_quote["id"])
    assert (bob_order["status"], bob_order["filled_quantity"], bob_order["average_price"]) == ("FILLED", "1", "100")
    assert (bob_order["fee_total"], bob_order["fee_asset"]) == ("0.002", "BTC")
    assert (carol_order["status"], carol_order["filled_quantity"], carol_order["filled_notional"]) == (
        "FILLED", "0.5", "51")
    assert balance(bob_bot, "USDT") == (FUNDS_USDT - 100, D(0)), "the unspent 50 came back"
    assert balance(carol_bot, "USDT") == (FUNDS_USDT - 51, D(0))

    sell = placed(seller, {"market": "BTC-USDT", "side": "SELL", "type": "MARKET", "quantity": "0.25"})
    assert balance(seller, "BTC") == (FUNDS_BTC - 2 - D("0.25"), D("0.75")), "0.5 still resting at 102, + 0.25"
    drain(matcher)
    assert fetched(seller, sell["id"])["status"] == "EXPIRED", "no bids: a market order does not rest"
    assert balance(seller, "BTC")[1] == D("0.5")


def test_limit_maker_rests_or_is_rejected_when_it_would_take(traders, matcher):
    """A LIMIT_MAKER that would cross is accepted (PENDING, held) and then
    REJECTED by the matcher with POST_ONLY_WOULD_TAKE, releasing its funds;
    one that does not cross rests as NEW."""
    alice, bob, _ = traders
    placed(session_client(alice), limit("SELL", 100, 1))
    drain(matcher)
    bot = bot_for(bob)

    taking = placed(bot, {"market": "BTC-USDT", "side": "BUY", "type": "LIMIT_MAKER", "price": "100", "quantity": "1"})
    making = placed(bot, {"market": "BTC-USDT", "side": "BUY", "type": "LIMIT_MAKER", "price": "99", "quantity": "1"})
    assert balance(bot, "USDT")[1] == D(199)
    drain(matcher)

    rejected = fetched(bot, taking["id"])
    assert (rejected["status"], rejected["status_reason"]) == ("REJECTED", "POST_ONLY_WOULD_TAKE")
    assert fetched(bot, making["id"])["status"] == "NEW"
    assert balance(bot, "USDT")[1] == D(99)
    assert Trade.objects.count() == 0


def test_stop_orders_wait_untriggered_then_trade_when_the_last_price_reaches_them(traders, matcher):
    """All four stop types are accepted PENDING with their funds held and wait
    UNTRIGGERED; a trade at 95 triggers the two stop-losses (SELL, stop 95),
    which sell into the bid at 94, while the take-profits (SELL above 110,
    BUY below 90) keep waiting. A stop whose condition already holds is
    REJECTED (WOULD_TRIGGER_IMMEDIATELY) and its hold released."""
    alice, bob, carol = traders
    placed(session_client(carol), limit("BUY", 94, 2))
    bot = bot_for(bob)
    stop = {"market": "BTC-USDT", "quantity": "1"}

    stop_loss = placed(bot, {**stop, "side": "SELL", "type": "STOP_LOSS", "stop_price": "95"})
    stop_loss_limit = placed(bot, {**stop, "side": "SELL", "type": "STOP_LOSS_LIMIT", "stop_price": "95", "price": "94"})
    take_profit = placed(bot, {**stop, "side": "SELL", "type": "TAKE_PROFIT", "stop_price": "110"})
    take_profit_limit = placed(bot, {**stop, "side": "BUY", "type": "TAKE_PROFIT_LIMIT", "stop_price": "90",
                                     "price": "91"})
    assert balance(bot, "BTC") == (FUNDS_BTC - 3, D(3))
    assert balance(bot, "USDT") == (FUNDS_USDT - 91, D(91))
    drain(matcher)
    stops = (stop_loss, stop_loss_limit, take_profit, take_profit_limit)
    assert [fetched(bot, o["id"])["status"] for o in stops] == ["UNTRIGGERED"] * 4

    placed(session_client(alice), limit("SELL", 95, "0.5"))
    placed(session_client(carol), limit("BUY", 95, "0.5"))
    drain(matcher)

    after = [fetched(bot, o["id"]) for o in stops]
    assert [(o["status"], o["filled_quantity"], o["average_price"]) for o in after] == [
        ("FILLED", "1", "94"), ("FILLED", "1", "94"), ("UNTRIGGERED", "0", None), ("UNTRIGGERED", "0", None)]
    assert balance(bot, "BTC")[1] == D(1), "only the take-profit sell still holds"

    too_late = placed(bot, {**stop, "side": "SELL", "type": "STOP_LOSS", "stop_price": "96"})
    drain(matcher)
    rejected = fetched(bot, too_late["id"])
    assert (rejected["status"], rejected["status_reason"]) == ("REJECTED", "WOULD_TRIGGER_IMMEDIATELY")
    assert balance(bot, "BTC")[1] == D(1)


# ------------------------------------------------------------- idempotency


def test_a_repeated_client_order_id_returns_the_first_order_and_writes_nothing(traders, matcher):
    """The same request with the same client_order_id answers 200 with the
    same order: one row, one hold, no new ledger entry, no second command on
    the stream (also for the symbol in lower case). The same id with any
    other term (price, time in force) is 409 CLIENT_ORDER_ID_REUSED and
    writes nothing; another user may use the same id for their own order."""
    alice, bob, _ = traders
    bot = bot_for(alice)
    body = limit("BUY", 100, 1, client_order_id="retry-42")

    first = placed(bot, body)
    before = writes()
    again = bot.post(ORDERS, json=body)
    lower_case = bot.post(ORDERS, json={**body, "market": "btc-usdt", "time_in_force": "GTC"})

    assert (again.status_code, again.json()) == (200, first)
    assert (lower_case.status_code, lower_case.json()["id"]) == (200, first["id"])
    assert writes() == before
    assert Order.objects.filter(user=alice, client_order_id="retry-42").count() == 1
    assert Hold.objects.filter(reference=f"order:{first['id']}").count() == 1
    assert balance(bot, "USDT") == (FUNDS_USDT - 100, D(100))

    for changed in ({"price": "101"}, {"quantity": "2"}, {"side": "SELL"}, {"time_in_force": "IOC"},
                    {"type": "LIMIT_MAKER"}):
        body_changed = {**body, **changed}
        assert_error(bot.post(ORDERS, json=body_changed), 409, "CLIENT_ORDER_ID_REUSED")
    assert writes() == before

    drain(matcher)
    assert bot.post(ORDERS, json=body).json()["status"] == "NEW", "a repeat shows the order as it is now"
    theirs = placed(session_client(bob), body)
    assert theirs["id"] != first["id"]


def test_concurrent_repeats_of_a_client_order_id_place_one_order(traders, matcher):
    """Four clients of the same user send the same order with the same
    client_order_id at the same moment (a bot retrying over several
    connections): one gets 201, the others 200 with that same order, and
    there is one order, one hold and one command on the stream."""
    alice = traders[0]
    clients = [session_client(alice) for _ in range(4)]
    body = limit("BUY", 100, 1, client_order_id="race-1")
    start = threading.Barrier(len(clients))

    def send(client):
        start.wait()
        try:
            response = client.post(ORDERS, json=body)
            return response.status_code, response.json()["id"]
        finally:
            connection.close()

    with ThreadPoolExecutor(len(clients)) as pool:
        results = list(pool.map(send, clients))

    assert sorted(status for status, _ in results) == [200, 200, 200, 201]
    assert len({order_id for _, order_id in results}) == 1
    order_id = results[0][1]
    assert Order.objects.filter(user=alice).count() == 1
    assert Hold.objects.filter(reference=f"order:{order_id}").count() == 1
    assert get_redis().xlen(stream.stream_key("BTC-USDT")) == 1
    assert balance(clients[0], "USDT") == (FUNDS_USDT - 100, D(100))


# ------------------------------------------------------------ lists, pages


def test_order_list_filters_and_pages_through_own_orders_only(traders, matcher):
    """GET /orders lists only the caller's orders, newest first; market,
    status (OPEN = any open status), side and the created_at window narrow it;
    following `next` with a small limit visits every order exactly once, even
    when a new order arrives between pages."""
    alice, bob, _ = traders
    client = session_client(alice)
    buys = [placed(client, limit("BUY", 90 + i, 1))["id"] for i in range(5)]
    sell = placed(client, limit("SELL", 200, 1))["id"]
    placed(session_client(bob), limit("BUY", 80, 1))
    drain(matcher)
    assert client.delete(f"{ORDERS}/{sell}").status_code == 202
    drain(matcher)
    pending = placed(client, limit("BUY", 85, 1))["id"]
    Order.objects.filter(pk__in=buys[:2]).update(created_at=datetime(2025, 1, 1, tzinfo=timezone.utc))
    mine = [pending, sell, *reversed(buys)]

    def ids(**query):
        response = client.get(ORDERS, query=query)
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    assert ids() == mine
    assert ids(market="btc-usdt") == mine
    assert ids(status="OPEN") == [pending, *reversed(buys)]
    assert ids(status="CANCELED") == [sell]
    assert ids(status="PENDING") == [pending]
    assert ids(side="SELL") == [sell]
    assert ids(start_time="2025-06-01T00:00:00Z") == [pending, sell, *reversed(buys[2:])]
    assert ids(end_time="2025-06-01T00:00:00Z") == list(reversed(buys[:2]))
    assert ids(status="OPEN", side="BUY", end_time="2025-06-01T00:00:00Z") == list(reversed(buys[:2]))

    seen, url, pages = [], ORDERS + "?limit=3", 0
    while url:
        page = client.get(url).json()
        seen += [row["id"] for row in page["results"]]
        url, pages = page["next"], pages + 1
        if pages == 1:
            placed(client, limit("BUY", 70, 1))  # newer than every page still to come
    assert (seen, pages) == (mine, 3)


def test_own_trades_show_side_role_and_fee_of_the_caller_only(traders, matcher):
    """GET /trades/my gives each party its own view of a trade (side, role,
    fee and fee asset, order id); a user who did not trade sees nothing, and
    the market filter narrows it."""
    alice, bob, carol = traders
    maker = placed(session_client(alice), limit("SELL", 100, 1))
    taker = placed(bot_for(bob), limit("BUY", 100, 1))
    drain(matcher)

    def trades(user):
        response = bot_for(user).get("/api/v1/trades/my", query={"market": "BTC-USDT"})
        assert response.status_code == 200, response.content
        return response.json()["results"]

    [alices], [bobs] = trades(alice), trades(bob)
    common = {"id": alices["id"], "market": "BTC-USDT", "price": "100", "quantity": "1", "quote_quantity": "100",
              "taker_side": "BUY", "executed_at": alices["executed_at"]}
    assert alices == {**common, "order_id": maker["id"], "side": "SELL", "role": "MAKER", "fee": "0.1",
                      "fee_asset": "USDT"}
    assert bobs == {**common, "order_id": taker["id"], "side": "BUY", "role": "TAKER", "fee": "0.002",
                    "fee_asset": "BTC"}
    assert trades(carol) == []


# ------------------------------------------------------------- ownership


def test_another_users_order_is_not_found_and_cannot_be_touched(traders, matcher):
    """Reading, cancelling or amending someone else's order answers 404
    ORDER_NOT_FOUND exactly as for an id that does not exist (never 403,
    never any of its data), and the order stays as it was."""
    alice, bob, _ = traders
    theirs = placed(session_client(bob), limit("BUY", 100, 1))
    drain(matcher)
    before = writes()

    for client in (session_client(alice), bot_for(alice)):
        url = f"{ORDERS}/{theirs['id']}"
        responses = [client.get(url), client.delete(url), client.patch(url, json={"quantity": "0.5"})]
        missing = client.get(f"{ORDERS}/999999999")
        for response in responses:
            assert response.status_code == 404
            assert response.json() == {"code": "ORDER_NOT_FOUND", "message": "No such order.", "field": None}
        assert missing.json() == responses[0].json()

    order = Order.objects.get(pk=theirs["id"])
    assert (order.status, order.cancel_requested_at, order.quantity) == ("NEW", None, D(1))
    assert writes() == before


# --------------------------------------------------------- cancel, amend


def test_cancel_is_accepted_then_applied_by_the_matcher(traders, matcher):
    """DELETE /orders/{id} answers 202 with the order still open and
    cancel_requested true; after the matcher runs it is CANCELED and its
    funds are free. Cancelling it again is 409 ORDER_NOT_OPEN."""
    bot = bot_for(traders[0])
    order = placed(bot, limit("BUY", 100, 2))
    drain(matcher)

    response = bot.delete(f"{ORDERS}/{order['id']}")

    assert response.status_code == 202
    assert (response.json()["status"], response.json()["cancel_requested"]) == ("NEW", True)
    assert balance(bot, "USDT")[1] == D(200), "held until the matcher applies the cancel"
    drain(matcher)
    canceled = fetched(bot, order["id"])
    assert (canceled["status"], canceled["status_reason"]) == ("CANCELED", "CANCEL")
    assert balance(bot, "USDT") == (FUNDS_USDT, D(0))
    body = assert_error(bot.delete(f"{ORDERS}/{order['id']}"), 409, "ORDER_NOT_OPEN")
    assert body["status"] == "CANCELED"


def test_cancel_all_cancels_the_callers_open_orders_in_the_market_only(traders, matcher):
    """DELETE /orders?market= counts and cancels every open order of the
    caller in that market, sequenced or still PENDING; another user's orders
    in the same market stay open."""
    alice, bob, _ = traders
    client, bot = session_client(alice), bot_for(alice)
    mine = [placed(client, limit("BUY", 90 + i, 1))["id"] for i in range(2)]
    theirs = placed(session_client(bob), limit("BUY", 95, 1))["id"]
    drain(matcher)
    mine.append(placed(client, limit("SELL", 120, 1))["id"])  # still PENDING

    response = bot.delete(ORDERS, query={"market": "btc-usdt"})

    assert (response.status_code, response.json()) == (202, {"market": "BTC-USDT", "orders_to_cancel": 3})
    drain(matcher)
    assert {fetched(client, order_id)["status"] for order_id in mine} == {"CANCELED"}
    assert Order.objects.get(pk=theirs).status == "NEW"
    assert balance(client, "USDT") == (FUNDS_USDT, D(0)) and balance(client, "BTC") == (FUNDS_BTC, D(0))
    assert bot.delete(ORDERS, query={"market": "BTC-USDT"}).json()["orders_to_cancel"] == 0


def test_amend_quantity_down_keeps_priority_price_change_applies_and_filled_part_is_the_floor(traders, matcher):
    """PATCH /orders/{id} answers 202 and the matcher applies it: alice's
    bid reduced from 2 to 1.5 keeps its place ahead of bob's at the same price
    (a sell of 1 fills alice), and its hold shrinks; a new quantity not above
    what already filled is 400 QUANTITY_NOT_ABOVE_FILLED with nothing
    written; bob's price change to 99.5 is applied; amending a FILLED order
    is 409 ORDER_NOT_RESTING."""
    alice, bob, carol = traders
    alice_bot, bob_bot = bot_for(alice), bot_for(bob)
    first = placed(alice_bot, limit("BUY", 100, 2))
    second = placed(bob_bot, limit("BUY", 100, 1))
    drain(matcher)

    response = alice_bot.patch(f"{ORDERS}/{first['id']}", json={"quantity": "1.5"})
    assert response.status_code == 202, response.content
    assert (response.json()["status"], response.json()["new_quantity"]) == ("REQUESTED", "1.5")
    drain(matcher)
    assert OrderAmendment.objects.get(pk=response.json()["id"]).status == "APPLIED"
    assert balance(alice_bot, "USDT") == (FUNDS_USDT - 150, D(150))
    from exchange.apikeys.models import ApiKey
    from exchange.audit.models import AuditLog

    audited = AuditLog.objects.get(action="AMEND_ORDER", object_id=str(first["id"]))
    assert (audited.actor_user_id, audited.actor_api_key_id, audited.subject_user_id) == (
        alice.pk, ApiKey.objects.get(key_id=alice_bot.key_id).pk, alice.pk)
    assert (audited.before, audited.after["quantity"]) == ({"price": "100", "quantity": "2"}, "1.5")

    placed(session_client(carol), limit("SELL", 100, 1))
    drain(matcher)
    assert (fetched(alice_bot, first["id"])["status"], fetched(bob_bot, second["id"])["status"]) == (
        "PARTIALLY_FILLED", "NEW"), "the amended order kept its priority"

    before = writes()
    for quantity in ("1", "0.5"):
        body = assert_error(alice_bot.patch(f"{ORDERS}/{first['id']}", json={"quantity": quantity}), 400,
                            "QUANTITY_NOT_ABOVE_FILLED")
        assert body["field"] == "quantity"
    assert_error(alice_bot.patch(f"{ORDERS}/{first['id']}", json={}), 400, "NOTHING_TO_AMEND")
    assert writes() == before

    assert bob_bot.patch(f"{ORDERS}/{second['id']}", json={"price": "99.5"}).status_code == 202
    drain(matcher)
    amended = fetched(bob_bot, second["id"])
    assert (amended["price"], amended["quantity"], amended["status"]) == ("99.5", "1", "NEW")
    assert balance(bob_bot, "USDT") == (FUNDS_USDT - D("99.5"), D("99.5"))

    placed(session_client(carol), limit("SELL", 100, "0.5"))
    drain(matcher)
    assert fetched(alice_bot, first["id"])["status"] == "FILLED"
    assert_error(alice_bot.patch(f"{ORDERS}/{first['id']}", json={"quantity": "3"}), 409, "ORDER_NOT_RESTING")


# ------------------------------------------------------------ market data


def test_public_market_data_after_a_few_trades(traders, matcher, api_client):
    """Anonymous GETs of the order book (with depth), recent trades, the
    24-hour ticker and klines give exactly the numbers of two trades (1 at
    100, then 0.5 at 101) and the orders left resting; the order book is the
    same from the database when the matcher's Redis snapshot is missing."""
    alice, bob, carol = traders
    seller, buyer = session_client(alice), session_client(bob)
    placed(seller, limit("SELL", 100, 1))
    placed(seller, limit("SELL", 101, 2))
    placed(buyer, limit("BUY", 100, 1))
    placed(buyer, limit("BUY", 101, "0.5"))
    placed(session_client(carol), limit("BUY", 99, 3))
    placed(session_client(carol), limit("BUY", 98, 1))
    placed(buyer, limit("BUY", 99, "0.5"))
    drain(matcher)

    book = api_client.get("/api/v1/orderbook/BTC-USDT").json()
    assert book == {"symbol": "BTC-USDT", "sequence": book["sequence"], "bids": [["99", "3.5"], ["98", "1"]],
                    "asks": [["101", "1.5"]]}
    assert book["sequence"] == matcher.book.sequence
    assert api_client.get("/api/v1/orderbook/btc-usdt", {"depth": 1}).json()["bids"] == [["99", "3.5"]]
    get_redis().delete(stream.depth_key("BTC-USDT"))
    assert api_client.get("/api/v1/orderbook/BTC-USDT").json() == book, "the database fallback agrees"

    trades = api_client.get("/api/v1/trades", {"market": "BTC-USDT"}).json()
    assert [(t["price"], t["quantity"], t["quote_quantity"], t["taker_side"]) for t in trades] == [
        ("101", "0.5", "50.5", "BUY"), ("100", "1", "100", "BUY")]
    assert len(api_client.get("/api/v1/trades", {"market": "BTC-USDT", "limit": 1}).json()) == 1

    ticker = api_client.get("/api/v1/ticker/BTC-USDT").json()
    assert {key: ticker[key] for key in ("symbol", "open", "high", "low", "last", "volume", "quote_volume",
                                         "trade_count", "change", "change_percent")} == {
        "symbol": "BTC-USDT", "open": "100", "high": "101", "low": "100", "last": "101", "volume": "1.5",
        "quote_volume": "150.5", "trade_count": 2, "change": "1", "change_percent": "1"}

    for interval in ("1m", "1h"):
        candles = api_client.get("/api/v1/klines/BTC-USDT", {"interval": interval}).json()
        assert 1 <= len(candles) <= 2  # both trades in one candle unless a boundary fell between them
        assert (candles[0]["open"], candles[-1]["close"]) == ("100", "101")
        assert sum(D(c["volume"]) for c in candles) == D("1.5")
        assert sum(D(c["quote_volume"]) for c in candles) == D("150.5")
        assert sum(c["trade_count"] for c in candles) == 2
    assert api_client.get("/api/v1/klines/BTC-USDT", {"interval": "1d", "end_time": "2020-01-01T00:00:00Z"}).json() == []


def test_unknown_market_is_a_stable_error_everywhere(traders, redis_app, api_client):
    """An unknown symbol in a body or query is 400 UNKNOWN_MARKET (field
    market); in a URL it is 404 UNKNOWN_MARKET (field symbol); nothing is
    written."""
    client = session_client(traders[0])
    heartbeat()
    before = writes()

    for response in (client.post(ORDERS, json=limit("BUY", 100, 1, market="ETH-USDT")),
                     client.get(ORDERS, query={"market": "ETH-USDT"}), client.delete(ORDERS, query={"market": "ETH-USDT"}),
                     client.get("/api/v1/trades/my", query={"market": "ETH-USDT"}),
                     api_client.get("/api/v1/trades", {"market": "ETH-USDT"})):
        assert assert_error(response, 400, "UNKNOWN_MARKET")["field"] == "market"
    for path in ("orderbook/ETH-USDT", "ticker/ETH-USDT", "klines/ETH-USDT?interval=1m"):
        assert assert_error(api_client.get(f"/api/v1/{path}"), 404, "UNKNOWN_MARKET")["field"] == "symbol"
    assert writes() == before


# ------------------------------------------------------ keys, dependencies


def test_a_read_only_key_reads_orders_but_cannot_place_cancel_or_amend(traders, matcher):
    """A key with only `read` lists and reads its user's orders; POST, DELETE
    (one or all) and PATCH are 403 API_KEY_PERMISSION_DENIED and change
    nothing."""
    alice = traders[0]
    order = placed(session_client(alice), limit("BUY", 100, 1))
    drain(matcher)
    reader = bot_for(alice, permissions=("read",))
    before = writes()

    assert reader.get(ORDERS).json()["results"][0]["id"] == order["id"]
    assert reader.get(f"{ORDERS}/{order['id']}").status_code == 200
    for response in (reader.post(ORDERS, json=limit("BUY", 100, 1)), reader.delete(f"{ORDERS}/{order['id']}"),
                     reader.delete(ORDERS, query={"market": "BTC-USDT"}),
                     reader.patch(f"{ORDERS}/{order['id']}", json={"quantity": "0.5"})):
        assert_error(response, 403, "API_KEY_PERMISSION_DENIED")
    assert writes() == before
    assert Order.objects.get(pk=order["id"]).cancel_requested_at is None


def test_no_live_matcher_means_503_and_nothing_written(traders, matcher):
    """Without the matcher's heartbeat (it stopped, or never started), a
    valid order or amendment is refused with 503 MATCHER_UNAVAILABLE and
    Retry-After, and nothing is written; invalid input is still a 400. A
    cancel is still recorded (202): the matcher applies it first thing when
    it is back."""
    bot = bot_for(traders[0])
    order = placed(bot, limit("BUY", 100, 1))
    drain(matcher)
    get_redis().delete(stream.heartbeat_key("BTC-USDT"))
    before = writes()

    response = bot.post(ORDERS, json=limit("BUY", 100, 1))
    assert_error(response, 503, "MATCHER_UNAVAILABLE")
    assert response["Retry-After"] == "1"
    assert_error(bot.patch(f"{ORDERS}/{order['id']}", json={"quantity": "2"}), 503, "MATCHER_UNAVAILABLE")
    assert_error(bot.post(ORDERS, json=limit("BUY", "100.001", 1)), 400, "INVALID_TICK_SIZE")
    assert writes() == before
    assert balance(bot, "USDT") == (FUNDS_USDT - 100, D(100))

    assert bot.delete(f"{ORDERS}/{order['id']}").status_code == 202
    matcher.recover()  # the matcher comes back
    drain(matcher)
    assert fetched(bot, order["id"])["status"] == "CANCELED"


@pytest.mark.parametrize("throttled", [True, False], ids=["throttled", "throttles-off"])
def test_redis_down_means_503_and_nothing_written(traders, redis_app, redis_down, settings, throttled):
    """With Redis unreachable, placing, cancelling and amending answer 503
    with a stable code and write nothing: the rate limiter refuses first,
    and with rate limits switched off the order service itself does (it
    cannot read the book or the matcher's heartbeat)."""
    if not throttled:
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {
            "anon": "", "user": "", "orders": "", "auth": ""}}
    client = session_client(traders[0])
    counts = Order.objects.count(), Hold.objects.count()

    responses = [client.post(ORDERS, json=limit("BUY", 100, 1))]
    if throttled:  # without rate limits these fail earlier, on the order id or the market
        responses += [client.patch(f"{ORDERS}/1", json={"quantity": "1"}),
                      client.delete(ORDERS, query={"market": "BTC-USDT"})]
    for response in responses:
        assert response.status_code == 503, response.content
        assert response.json()["code"] == "SERVICE_UNAVAILABLE" and response["Retry-After"] == "1"
    assert (Order.objects.count(), Hold.objects.count()) == counts


def test_klines_read_at_most_limit_intervals_from_start_time(market, api_client):
    """With start_time, klines are the `limit` intervals from it: a start_time in year 1
    finds nothing instead of aggregating every candle since (it used to read the whole
    history up to now and return its last `limit` intervals)."""
    from datetime import timedelta

    from orders.models import Candle

    first = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
    for minute in range(10):
        price = D(100 + minute)
        Candle.objects.create(market=market, opened_at=first + timedelta(minutes=minute), open=price, high=price,
                              low=price, close=price, volume=D(1), quote_volume=price, trade_count=1,
                              first_sequence=minute, last_sequence=minute)
    candles = api_client.get("/api/v1/klines/BTC-USDT", {"interval": "1m", "start_time": first.isoformat(),
                                                         "limit": 3}).json()
    assert [c["open"] for c in candles] == ["100", "101", "102"]
    assert api_client.get("/api/v1/klines/BTC-USDT", {"interval": "1m", "start_time": "0001-01-01T00:00:00Z",
                                                      "limit": 1000}).json() == []
    latest = api_client.get("/api/v1/klines/BTC-USDT", {"interval": "1m", "limit": 2,
                                                        "end_time": (first + timedelta(minutes=10)).isoformat()}).json()
    assert [c["open"] for c in latest] == ["108", "109"]
