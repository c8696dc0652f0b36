"""The fast order path answers exactly as the Django views do (orders/fastpath.py).

Each case is played twice, on two users with the same funds and keys of the
same permissions: once through the web worker's application (where the fast
path takes signed placements and cancels) and once through Django's ASGI
handler alone (middleware, DRF: the reference implementation). The answers
must be the same: status, body (ids and times aside) and headers.
"""

from __future__ import annotations

import re
import time

import pytest

from exchange.apikeys.services import api_key_revoke
from exchange.core.redis import get_redis
from exchange.models import Market
from matching import stream
from orders.models import Order
from tests.asgi_client import AsgiClient, AsgiSignedClient
from tests.factories import api_key_for
from tests.orders.conftest import ORDERS, drain, heartbeat

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sound_ledger")]

# Headers both doors must agree on (Date, Server, lengths and request ids differ by nature).
COMPARED_HEADERS = ("content-type", "allow", "x-frame-options", "x-content-type-options", "referrer-policy",
                    "cross-origin-opener-policy", "www-authenticate", "retry-after", "vary")


class Door:
    """One trader and their signed client, on one of the two applications."""

    def __init__(self, client: AsgiClient, user, permissions=("read", "trade")):
        self.user = user
        api_key, secret = api_key_for(user, permissions=permissions)
        self.api_key = api_key
        self.signed = AsgiSignedClient(client, api_key.key_id, secret)

    def post(self, order=None, **kwargs):
        """POST /orders with ``order`` as JSON (or raw ``body=`` bytes)."""
        return self.signed.post(ORDERS, json=order, **kwargs)

    def delete(self, path=ORDERS, **kwargs):
        return self.signed.delete(path, **kwargs)


@pytest.fixture
def doors(traders, matcher, settings):
    """(fast, django): alice through the worker's application, bob through Django alone."""
    from exchange.asgi import django_asgi_app

    fast_client, django_client = AsgiClient(), AsgiClient()
    django_client.application = django_asgi_app
    alice, bob = traders[0], traders[1]
    yield Door(fast_client, alice), Door(django_client, bob)
    fast_client.close()
    django_client.close()


def normalized(response) -> tuple:
    body = response.json()

    def scrub(value, key=None):
        if isinstance(value, dict):
            return {name: scrub(item, name) for name, item in value.items()}
        if isinstance(value, list):
            return [scrub(item) for item in value]
        if key in ("id", "created_at", "updated_at", "server_time_ms"):
            return "<varies>"
        if key == "client_order_id" and isinstance(value, str) and len(value) == 32:
            return "<generated>"
        if key == "message" and isinstance(value, str):
            return re.sub(r"[0-9]{6,}", "<n>", value)  # times in messages
        return value

    headers = {name: response.headers.get(name) for name in COMPARED_HEADERS}
    return response.status_code, scrub(body), headers


def same_answer(fast_response, django_response):
    fast, reference = normalized(fast_response), normalized(django_response)
    assert fast == reference, f"\nfast:   {fast}\ndjango: {reference}"
    return fast


def limit(side="BUY", price="100", quantity="1", **extra) -> dict:
    return {"market": "BTC-USDT", "side": side, "type": "LIMIT", "price": price, "quantity": quantity, **extra}


BODIES = [
    pytest.param(limit(), id="limit buy"),
    pytest.param(limit("SELL", "101", "0.5", time_in_force="IOC"), id="limit sell IOC"),
    pytest.param(limit(client_order_id="c-1"), id="with client_order_id"),
    pytest.param(limit(market="btc-usdt"), id="lower-case symbol"),
    pytest.param({"market": "BTC-USDT", "side": "BUY", "type": "MARKET", "quote_quantity": "10"}, id="market by quote"),
    pytest.param({"market": "BTC-USDT", "side": "SELL", "type": "MARKET", "quantity": "0.5"},
                 id="market sell without reference"),
    pytest.param(limit(price="100.001"), id="tick size"),
    pytest.param(limit(quantity="0.00001"), id="step size"),
    pytest.param(limit(price="1000"), id="outside the price band"),
    pytest.param(limit(quantity="5000"), id="quantity too large"),
    pytest.param(limit(price="100", quantity="1000"), id="insufficient funds"),
    pytest.param(limit(market="BTC-EUR"), id="unknown market"),
    pytest.param(limit(market="x" * 50), id="symbol too long"),
    pytest.param(limit(side="HOLD"), id="bad side"),
    pytest.param(limit(quanity="1"), id="unknown field"),
    pytest.param(limit(price=100.5), id="price as a JSON number"),
    pytest.param(limit(price=True), id="price as a bool"),
    pytest.param(limit(price="1e999999999999999999999"), id="price with a huge exponent"),
    pytest.param(limit(client_order_id=" a"), id="client_order_id with a space"),
    pytest.param(limit(client_order_id=12), id="client_order_id as a number"),
    pytest.param({"market": "BTC-USDT", "side": "BUY", "type": "LIMIT", "quantity": "1"}, id="price missing"),
    pytest.param({"market": "BTC-USDT", "side": "BUY", "type": "STOP_LOSS_LIMIT", "price": "100",
                  "stop_price": "99", "quantity": "1"}, id="stop-limit"),
    pytest.param({}, id="empty object"),
]


@pytest.mark.parametrize("body", BODIES)
def test_placements_answer_as_the_django_view_does(doors, body):
    """Valid orders and every kind of invalid one: the same status, body and headers."""
    fast, django = doors
    same_answer(fast.post(body), django.post(body))


RAW_BODIES = [
    pytest.param(b"", id="empty body"),
    pytest.param(b"{", id="malformed"),
    pytest.param(b"[1, 2]", id="a list"),
    pytest.param(b'{"market": "BTC-USDT", "market": "ETH-USDT"}', id="repeated key"),
    pytest.param(b'{"username": 1e9999999999999999999999}', id="number overflowing Decimal"),
    pytest.param(b'{"price": NaN}', id="NaN"),
    pytest.param(b"\xff\xfe", id="not UTF-8"),
    pytest.param(b"[" * 5000 + b"]" * 5000, id="nested too deep"),
]


@pytest.mark.parametrize("body", RAW_BODIES)
def test_bodies_that_are_not_an_order_answer_as_the_django_view_does(doors, body):
    """Bad JSON is a 400 MALFORMED_REQUEST (never a 500), on both doors alike."""
    fast, django = doors
    status, answer, _ = same_answer(fast.post(body=body), django.post(body=body))
    assert status == 400


def test_a_number_overflowing_decimal_is_malformed_not_a_server_error(doors):
    """{"username": 1e9999999999999999999999} used to raise decimal.InvalidOperation: 500."""
    fast, _ = doors
    response = fast.post(body=b'{"username": 1e9999999999999999999999}')
    assert response.status_code == 400 and response.json()["code"] == "MALFORMED_REQUEST"


def test_idempotent_repeats_and_reuse_answer_alike(doors):
    """A repeat returns the first order (200); the same id for another order is 409; a repeat
    whose order could no longer be placed (its funds are gone) still returns the first order."""
    fast, django = doors
    for door in doors:
        assert door.post(limit(client_order_id="idem-1")).status_code == 201
    same_answer(fast.post(limit(client_order_id="idem-1")), django.post(limit(client_order_id="idem-1")))
    same_answer(fast.post(limit(price="99", client_order_id="idem-1")),
                django.post(limit(price="99", client_order_id="idem-1")))
    for door in doors:  # spend what is left: 1,000,000 - 100
        assert door.post(limit(price="1000", quantity="999")).status_code == 201
        assert door.post(limit(price="100", quantity="9")).status_code == 201
    status, _, _ = same_answer(fast.post(limit(client_order_id="idem-1")), django.post(limit(client_order_id="idem-1")))
    assert status == 200
    assert Order.objects.filter(client_order_id="idem-1").count() == 2


def test_authentication_failures_answer_alike(doors):
    """Bad signature, missing header, stale timestamp, read-only key, replay: same codes, same headers."""
    fast, django = doors
    pairs = [
        (fast.post(limit(), headers={"X-SIGNATURE": "0" * 64}), django.post(limit(), headers={"X-SIGNATURE": "0" * 64})),
        (fast.post(limit(), headers={"X-SIGNATURE": ""}), django.post(limit(), headers={"X-SIGNATURE": ""})),
        (fast.post(limit(), sign={"timestamp_ms": 1}), django.post(limit(), sign={"timestamp_ms": 1})),
        (fast.post(limit(), headers={"X-API-KEY": "nope"}), django.post(limit(), headers={"X-API-KEY": "nope"})),
    ]
    for fast_response, django_response in pairs:
        status, _, headers = same_answer(fast_response, django_response)
        assert status == 401 and headers["www-authenticate"] == 'ApiKey realm="api"'

    timestamp = time.time_ns() // 1_000_000
    for door in doors:
        assert door.post(limit(), sign={"timestamp_ms": timestamp}).status_code == 201
    same_answer(fast.post(limit(), sign={"timestamp_ms": timestamp}), django.post(limit(), sign={"timestamp_ms": timestamp}))

    readers = [Door(door.signed.client, door.user, permissions=("read",)) for door in doors]
    status, answer, _ = same_answer(readers[0].post(limit()), readers[1].post(limit()))
    assert (status, answer["code"]) == (403, "API_KEY_PERMISSION_DENIED")

    for door in doors:
        api_key_revoke(user=door.user, key_id=door.api_key.key_id)
    status, answer, _ = same_answer(fast.post(limit()), django.post(limit()))
    assert (status, answer["code"]) == (401, "API_KEY_REVOKED")


def test_rate_limits_answer_alike(doors, settings):
    """The orders rate per key: the same 429 with Retry-After on both doors."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {
        **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "orders": "2/m"}}
    fast, django = doors
    for _ in range(2):
        same_answer(fast.post(limit()), django.post(limit()))
    status, answer, headers = same_answer(fast.post(limit()), django.post(limit()))
    assert (status, answer["code"]) == (429, "RATE_LIMITED") and int(headers["retry-after"]) >= 1


def test_market_state_and_matcher_health_answer_alike(doors, market):
    """A halted market is 409 MARKET_HALTED; a market whose matcher is down is 503 with Retry-After."""
    fast, django = doors
    get_redis().delete(stream.heartbeat_key(market.symbol))
    status, answer, headers = same_answer(fast.post(limit()), django.post(limit()))
    assert (status, answer["code"], headers["retry-after"]) == (503, "MATCHER_UNAVAILABLE", "1")
    heartbeat(market.symbol)

    Market.objects.filter(pk=market.pk).update(status=Market.Status.HALTED)
    from exchange.core import localcache

    localcache.config_changed()
    status, answer, _ = same_answer(fast.post(limit()), django.post(limit()))
    assert (status, answer["code"]) == (409, "MARKET_HALTED")


def test_cancels_answer_alike(doors, matcher):
    """Cancel one order (202 with the order), another user's (404), an unknown or absurd id (404),
    an order already closed (409); cancel all (202 with the count), with bad parameters (400)."""
    fast, django = doors
    placed = [door.post(limit()).json()["id"] for door in doors]
    same_answer(fast.delete(f"{ORDERS}/{placed[0]}"), django.delete(f"{ORDERS}/{placed[1]}"))
    same_answer(fast.delete(f"{ORDERS}/{placed[1]}"), django.delete(f"{ORDERS}/{placed[0]}"))
    same_answer(fast.delete(f"{ORDERS}/99999999"), django.delete(f"{ORDERS}/99999999"))
    same_answer(fast.delete(f"{ORDERS}/99999999999999999999999"), django.delete(f"{ORDERS}/99999999999999999999999"))
    drain(matcher)
    status, answer, _ = same_answer(fast.delete(f"{ORDERS}/{placed[0]}"), django.delete(f"{ORDERS}/{placed[1]}"))
    assert (status, answer["code"]) == (409, "ORDER_NOT_OPEN")

    for door in doors:
        door.post(limit())
        door.post(limit(price="99"))
    status, answer, _ = same_answer(fast.delete(query={"market": "btc-usdt"}), django.delete(query={"market": "btc-usdt"}))
    assert (status, answer) == (202, {"market": "BTC-USDT", "orders_to_cancel": 2})
    same_answer(fast.delete(query={}), django.delete(query={}))
    status, answer, _ = same_answer(fast.delete(query="market="), django.delete(query="market="))
    assert (status, answer["code"], answer["field"]) == (400, "BLANK", "market")
    same_answer(fast.delete(query={"market": "BTC-USDT", "x": "1"}), django.delete(query={"market": "BTC-USDT", "x": "1"}))
    same_answer(fast.delete(query={"market": "NOPE-USDT"}), django.delete(query={"market": "NOPE-USDT"}))
    same_answer(fast.delete(query="market=BTC-USDT&market=ETH-USDT"),
                django.delete(query="market=BTC-USDT&market=ETH-USDT"))


def test_the_fast_path_places_what_the_matcher_then_trades(doors, matcher, market):
    """An order placed on the fast path is held, enqueued and traded like any other: a buy from
    one door and a sell from the other meet in the book; the ledger stays sound (fixture)."""
    fast, django = doors
    buy = fast.post(limit(price="100", quantity="2")).json()
    sell = django.post(limit("SELL", price="100", quantity="2")).json()
    drain(matcher)
    assert Order.objects.get(pk=buy["id"]).status == "FILLED"
    assert Order.objects.get(pk=sell["id"]).status == "FILLED"
    assert Order.objects.get(pk=buy["id"]).client_ip == "127.0.0.1"


def test_concurrent_placements_are_batched_with_the_results_of_placing_them_alone(traders, matcher):
    """Sixty placements at once on one worker: they go to the database in a few statements, and
    each gets what placing it alone would give. Alice can afford 20 of her 30 buys (each holds
    50,000 of her 1,000,000 USDT): exactly 20 are accepted, the rest INSUFFICIENT_FUNDS; bob's
    ten repeat five client_order_ids twice: five orders, each repeat answered 200 with its
    order; carol's 20 sells all pass. Every ledger invariant holds (fixture)."""
    import asyncio
    import json as jsonlib

    from exchange.apikeys.signing import signed_headers

    keys = {user.username: api_key_for(user, permissions=("read", "trade")) for user in traders}
    requests = [("alice", limit(price="500", quantity="100")) for _ in range(30)]
    requests += [("bob", limit(client_order_id=f"bob-{i % 5}")) for i in range(10)]
    requests += [("carol", limit("SELL", "101", "1")) for _ in range(20)]
    signed = []
    now_ms = time.time_ns() // 1_000_000
    for index, (username, order) in enumerate(requests):  # a distinct timestamp, so signature, per request
        key, secret = keys[username]
        body = jsonlib.dumps(order).encode()
        signed.append((body, {"Content-Type": "application/json", **signed_headers(
            key.key_id, secret, "POST", ORDERS, None, body, timestamp_ms=now_ms - 60 + index)}))

    client = AsgiClient()

    async def all_at_once():
        from orders import batching

        responses = await asyncio.gather(*(
            client._request("POST", ORDERS, "", body, headers, "127.0.0.1") for body, headers in signed))
        return responses, batching.batcher().statements, batching.batcher().orders

    try:
        responses, statements, orders = asyncio.run_coroutine_threadsafe(all_at_once(), client.loop).result(60)
    finally:
        client.close()

    def answers(name):
        return sorted(str(r.json().get("code", r.status_code)) for (user, _), r in zip(requests, responses)
                      if user == name)

    assert answers("alice") == ["201"] * 20 + ["INSUFFICIENT_FUNDS"] * 10
    assert answers("bob") == ["200"] * 5 + ["201"] * 5
    assert Order.objects.filter(user=traders[1]).count() == 5
    assert answers("carol") == ["201"] * 20
    assert orders == 60 and statements < 60, "placements waiting together went together"


def test_redis_down_means_503_and_nothing_written(doors, settings, tmp_path):
    """With Redis unreachable (no replay check, no rate limit, no heartbeat can be read) both doors
    answer 503 SERVICE_UNAVAILABLE with Retry-After, for placements and cancels, and write nothing."""
    from exchange.core.redis import get_redis
    from wallet.models import Hold

    from tests.matching.conftest import place

    fast, django = doors
    placed = [place(door.user, "BUY", price=100, quantity=1).pk for door in doors]  # before Redis goes
    counts = Order.objects.count(), Hold.objects.count()
    settings.REDIS_APP_URL = f"unix://{tmp_path}/no-redis.sock"
    get_redis.cache_clear()
    try:
        for request in (lambda door, i: door.post(limit()), lambda door, i: door.delete(f"{ORDERS}/{placed[i]}"),
                        lambda door, i: door.delete(query={"market": "BTC-USDT"})):
            status, answer, headers = same_answer(request(fast, 0), request(django, 1))
            assert (status, answer["code"], headers["retry-after"]) == (503, "SERVICE_UNAVAILABLE", "1")
    finally:
        get_redis.cache_clear()
    assert (Order.objects.count(), Hold.objects.count()) == counts
    assert Order.objects.filter(cancel_requested_at__isnull=False).count() == 0


def test_both_doors_write_the_same_audit_rows(doors, matcher):
    """Placing, cancelling, cancelling all and amending write PLACE_ORDER, CANCEL_ORDER and
    AMEND_ORDER rows in the same transaction as the change, naming the user, the API key, the
    client's address, its user agent and the request id, with the order's terms; the two doors
    write the same rows."""
    from exchange.audit.models import AuditLog

    headers = {"User-Agent": "bot/1.0", "X-Request-ID": "req-123"}
    for door in doors:
        order = door.post(limit(client_order_id="audited"), headers=headers).json()
        door.post(limit(price="99"), headers=headers)
        door.delete(f"{ORDERS}/{order['id']}", headers=headers)
        door.delete(f"{ORDERS}/{order['id']}", headers=headers)  # a repeat requests nothing new
        door.delete(query={"market": "BTC-USDT"}, headers=headers)

    def rows(door):
        return [(row.action, row.object_type, row.market, row.actor_user_id, row.actor_api_key_id,
                 row.subject_user_id, str(row.ip), row.user_agent, row.request_id,
                 {key: value for key, value in (row.after or {}).items() if key not in ("cancel_requested_at",)})
                for row in AuditLog.objects.filter(subject_user_id=door.user.pk,
                                                   action__in=["PLACE_ORDER", "CANCEL_ORDER"]).order_by("id")]

    fast, django = rows(doors[0]), rows(doors[1])
    assert [row[0] for row in fast] == ["PLACE_ORDER", "PLACE_ORDER", "CANCEL_ORDER", "CANCEL_ORDER"]
    placed = fast[0]
    assert placed[1:9] == ("orders.order", "BTC-USDT", doors[0].user.pk, doors[0].api_key.pk, doors[0].user.pk,
                           "127.0.0.1", "bot/1.0", "req-123")
    assert placed[9]["client_order_id"] == "audited" and placed[9]["price"] == "100" and placed[9]["quantity"] == "1"
    assert fast[3][9].get("cancel_all") is True
    normalize = [
        (action, object_type, market, "user", "key", "subject", ip, agent, request_id,
         {key: value for key, value in after.items() if key != "client_order_id" or value == "audited"})
        for action, object_type, market, _, _, _, ip, agent, request_id, after in fast]
    assert normalize == [
        (action, object_type, market, "user", "key", "subject", ip, agent, request_id,
         {key: value for key, value in after.items() if key != "client_order_id" or value == "audited"})
        for action, object_type, market, _, _, _, ip, agent, request_id, after in django]


def test_risk_limits_and_kill_switches_answer_alike(doors, market):
    """The pre-trade check on both doors: at the open-order limit the next order is 409
    RISK_MAX_OPEN_ORDERS, over the order value limit 400 RISK_MAX_ORDER_NOTIONAL (whether the
    check rode in the worker's first round trip or, the worker's last heartbeat being too old,
    ran on its own); a frozen account is refused placing and cancelling all (403)."""
    from risk.services import restriction_set, risk_limit_set

    fast, django = doors
    for door in doors:
        risk_limit_set(scope="USER", user=door.user, values={"max_open_orders": 2, "max_order_notional": "5000"})
    for _ in range(2):  # within 0.5 s of the last heartbeat read: the check rides in the pipeline
        same_answer(fast.post(limit()), django.post(limit()))
    status, answer, _ = same_answer(fast.post(limit()), django.post(limit()))
    assert (status, answer["code"]) == (409, "RISK_MAX_OPEN_ORDERS")
    time.sleep(0.6)  # the heartbeat the worker read is too old now: the check runs on its own round trip
    status, answer, _ = same_answer(fast.post(limit()), django.post(limit()))
    assert (status, answer["code"]) == (409, "RISK_MAX_OPEN_ORDERS")
    status, answer, _ = same_answer(fast.post(limit(quantity="60")), django.post(limit(quantity="60")))
    assert (status, answer["code"]) == (400, "RISK_MAX_ORDER_NOTIONAL")

    for door in doors:
        restriction_set(kind="USER_FROZEN", reason="test", user=door.user)
    status, answer, _ = same_answer(fast.post(limit()), django.post(limit()))
    assert (status, answer["code"]) == (403, "RISK_USER_FROZEN")
    status, answer, _ = same_answer(fast.delete(query={"market": "BTC-USDT"}),
                                    django.delete(query={"market": "BTC-USDT"}))
    assert (status, answer["code"]) == (403, "RISK_USER_FROZEN")


def test_orders_the_database_refuses_give_their_risk_reservation_back(doors):
    """With a daily limit of two orders, three placements refused by the database (insufficient
    funds) use up nothing: two orders then pass, and only the third is RISK_DAILY_ORDER_COUNT."""
    from risk.services import risk_limit_set

    fast, django = doors
    for door in doors:
        risk_limit_set(scope="USER", user=door.user, values={"max_daily_orders": 2})
    for _ in range(3):
        status, answer, _ = same_answer(fast.post(limit(price="2000", quantity="600")),
                                        django.post(limit(price="2000", quantity="600")))
        assert (status, answer["code"]) == (400, "INSUFFICIENT_FUNDS")
    for _ in range(2):
        assert same_answer(fast.post(limit()), django.post(limit()))[0] == 201
    status, answer, _ = same_answer(fast.post(limit()), django.post(limit()))
    assert (status, answer["code"]) == (409, "RISK_DAILY_ORDER_COUNT")


def test_an_order_prepared_before_the_round_trip_is_checked_again_when_the_market_moved(doors, market):
    """The worker prepares an order (and its risk plan) from the heartbeat it read last, to send
    the reservation in its first round trip. When the fresh heartbeat brings other reference
    prices, that early work does not stand: the order is checked again, here against a price
    band it now falls outside of, and both doors answer alike."""
    fast, django = doors
    for door in doors:  # the worker reads the heartbeat (no prices yet: no band to check)
        assert door.post(limit(price="1000", quantity="0.001")).status_code == 201
    stream.heartbeat_write(market.symbol, sequence=0, pid=0, backlog=0, last_price="100", best_bid="99",
                           best_ask="101")
    status, answer, _ = same_answer(fast.post(limit(price="1000", quantity="0.001")),
                                    django.post(limit(price="1000", quantity="0.001")))
    assert status == 400 and answer["field"] == "price", answer


def test_caches_dropped_while_a_thread_warms_them_are_warmed_again_not_read_on_the_loop(doors, monkeypatch):
    """A configuration change seen by another request (it drops this process's caches on the
    event loop) while a placement's risk caches load in a thread: the placement loads them
    again in a thread. Before, it read them on the loop, which loaded them there: Django
    refused the query (SynchronousOnlyOperation) and the placement answered 500."""
    from exchange.core import localcache
    from risk import limits

    fast, _ = doors
    warm, drops = limits.warm, []

    def warm_then_dropped(user_id):
        warm(user_id)
        if not drops:
            drops.append(user_id)
            localcache.clear_all()  # as another request observing a new token would, meanwhile

    monkeypatch.setattr(limits, "warm", warm_then_dropped)
    localcache.clear_all()
    response = fast.post(limit())
    assert response.status_code == 201, response.json()
    assert drops == [fast.user.pk]
