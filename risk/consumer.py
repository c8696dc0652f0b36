"""The risk consumer of the event bus: counters and per-event surveillance from the matcher's events.

It reads ``order.events`` and ``trade.events`` through the deduping consumer
(``exchange.outbox.consumer``: the effects of the events of one read run in
one database transaction that records them as handled, so a redelivery is
skipped; if that fails, one event at a time, each in its own):

- ``order.updated`` that ends an order (FILLED, CANCELED, EXPIRED, REJECTED):
  the order leaves the user's open-order counters (``counters.CLOSE``);
  a cancel of an unfilled order also runs the spoofing rule;
- ``trade.executed``: the fill moves from the orders' counters to the users'
  positions (``counters.FILL``), and the wash-trade and large-trade rules run.

The Redis counter updates are idempotent by themselves (a deleted entry, a
sequence watermark), since they cannot share the database transaction: a
handler that fails after updating them is run again and changes nothing the
second time. A user whose counters are cold is rebuilt from the database
first (``CountersCold`` ends the pass; ``consume`` rebuilds and reads the
unacknowledged entries again).

Order matters for the watermark: one consumer at a time reads the streams
(``consume`` holds a Redis lock), so each market's trades arrive in sequence
order. With Kafka as the bus (``KAFKA_BOOTSTRAP_SERVERS``), this consumer
has nothing to read yet: docs/RISK.md, "Operations".
"""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime
from decimal import Decimal

from exchange.core.localcache import LocalCache
from exchange.core.redis import get_redis
from exchange.models import Market
from exchange.outbox.consumer import ReceivedEvent, RedisStreamConsumer
from exchange.outbox.models import Topic
from orders.models import FINAL_STATUSES, Order, Side
from risk import counters, surveillance
from risk.limits import to_units
from risk.pretrade import CountersCold

logger = logging.getLogger(__name__)

CONSUMER = "risk"
LOCK_KEY = "risk:consumer:lock"
LOCK_TTL_MS = 60_000


def _market_ids(symbol: str) -> tuple[int, int]:
    return Market.objects.values_list("id", "base_id").get(symbol=symbol)


_markets = LocalCache("risk.consumer.markets", _market_ids, max_age_s=3600)


def _close_call(data: dict) -> tuple[str, int, list, list]:
    """The counters script an ended order's event runs: (source, user, keys, args)."""
    user_id = data["user_id"]
    return counters.CLOSE, user_id, [counters.counters_key(user_id), counters.open_key(user_id)], \
        [data["client_order_id"]]


def _fill_calls(data: dict, client_order_ids: dict[int, str]) -> list[tuple[str, int, list, list]]:
    """The counters scripts a trade runs, one per user (a self-trade: one with both legs)."""
    market_id, base_id = _markets.get(data["market"])
    taker_buys = data["taker_side"] == Side.BUY
    quantity = to_units(Decimal(data["quantity"]))
    legs: dict[int, list] = {}
    for user_id, order_id, buys in ((data["maker_user_id"], data["maker_order_id"], not taker_buys),
                                    (data["taker_user_id"], data["taker_order_id"], taker_buys)):
        legs.setdefault(user_id, []).extend([client_order_ids[order_id], base_id, "b" if buys else "s", quantity])
    day = counters.day_of(datetime.fromisoformat(data["executed_at"]).timestamp())
    return [(counters.FILL, user_id, [counters.counters_key(user_id), counters.open_key(user_id)],
             [market_id, data["sequence"], day, counters.TTL_MS, *user_legs]) for user_id, user_legs in legs.items()]


def risk_event_wanted(event: ReceivedEvent) -> bool:
    """The events the consumer acts on: trades, and orders that ended. Every other event
    (an order accepted, resting, partly filled...) is acknowledged without touching the
    database; at a thousand orders a second that is most of them."""
    if event.version != 1:
        return False  # a version this code does not know (docs/EVENTS.md)
    if event.type == "trade.executed":
        return True
    return event.type == "order.updated" and event.data["status"] in FINAL_STATUSES


def risk_events_handle(events: list[ReceivedEvent]) -> None:
    """Each event's effect in turn (the ones ``risk_event_wanted`` keeps): the counters in one
    Redis round trip (the scripts in event order, pipelined), the trades' orders in one
    query, the trades' alerts raised together (``surveillance.TradeAlerts``). A user whose
    counters are cold stops it (``CountersCold``): the caller's transaction rolls back, and
    the scripts that did run change nothing when run again (see the module's docstring)."""
    events = [event for event in events if risk_event_wanted(event)]
    trades = [event.data for event in events if event.type == "trade.executed"]
    orders: dict[int, tuple[str, str | None]] = {}
    if trades:
        order_ids = {trade[side] for trade in trades for side in ("maker_order_id", "taker_order_id")}
        orders = {order_id: (coid, ip) for order_id, coid, ip in Order.objects.filter(
            id__in=order_ids).values_list("id", "client_order_id", "client_ip")}
    client_order_ids = {order_id: coid for order_id, (coid, _) in orders.items()}
    calls = []
    for event in events:
        calls.extend([_close_call(event.data)] if event.type == "order.updated"
                     else _fill_calls(event.data, client_order_ids))
    if calls:
        client = get_redis()
        pipe = client.pipeline(transaction=False)
        for source, _, keys, args in calls:
            counters.script(source, client)(keys=keys, args=args, client=pipe)
        for (_, user_id, _, _), reply in zip(calls, pipe.execute()):
            if reply == -1:
                raise CountersCold(user_id)
    alerts = surveillance.TradeAlerts()
    for event in events:
        market_id, _ = _markets.get(event.data["market"])
        if event.type == "order.updated":
            surveillance.cancel_check(event.data, market_id=market_id)
        else:
            trade = event.data
            surveillance.trade_check(trade, market_id=market_id, alerts=alerts, client_ips={
                order_id: orders[order_id][1] for order_id in (trade["maker_order_id"], trade["taker_order_id"])})
    alerts.raise_all()


def risk_event_handle(event: ReceivedEvent) -> None:
    risk_events_handle([event])


class _PassOver(Exception):
    """The pass used its time: the entry being read is left for the next pass."""


def consume(*, max_seconds: float = 5.0, max_rebuilds: int = 1000) -> int:
    """Handle what the streams hold, for at most about ``max_seconds`` (well inside the
    lock's expiry); returns how many events had an effect. Does nothing when another
    process is consuming: one reader at a time keeps each market's trades in order."""
    client = get_redis()
    token = uuid.uuid4().hex
    if not client.set(LOCK_KEY, token, nx=True, px=LOCK_TTL_MS):
        return 0
    deadline = time.monotonic() + max_seconds

    def handle(event: ReceivedEvent) -> None:
        if time.monotonic() > deadline:
            raise _PassOver
        risk_event_handle(event)

    def handle_many(events: list[ReceivedEvent]) -> None:
        if time.monotonic() > deadline:
            raise _PassOver
        risk_events_handle(events)

    handled = 0
    rebuilds = 0
    try:
        while True:
            # A fresh consumer re-reads first what an earlier pass read but did not acknowledge.
            consumer = RedisStreamConsumer(name=CONSUMER, topics=[Topic.ORDERS, Topic.TRADES], handler=handle,
                                           client=client, consumer_id=CONSUMER, wants=risk_event_wanted,
                                           handler_many=handle_many)
            try:
                consumer.drain()
                return handled + consumer.handled
            except _PassOver:
                return handled + consumer.handled
            except CountersCold as cold:
                handled += consumer.handled
                rebuilds += 1
                if rebuilds > max_rebuilds:
                    raise
                counters.counters_rebuild(user_id=cold.user_id, client=client)
    finally:
        # Release only our own lock (it may have expired and been taken by another pass).
        if client.get(LOCK_KEY) == token.encode():
            client.delete(LOCK_KEY)
