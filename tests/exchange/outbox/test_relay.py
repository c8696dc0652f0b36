"""The outbox and its relay on the Redis-stream bus: rows exist exactly when the
change committed, go out in order per key, survive a bus outage and refusals,
are published once by concurrent relays, and read back by a consumer as stored.
(Late commits and epochs: test_commit_order.py.)"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
import redis
from django.db import connection, transaction
from django.utils import timezone

from exchange.core.redis import get_redis
from exchange.outbox import metrics
from exchange.outbox.bus import RedisStreamBus, stream_name
from exchange.outbox.consumer import RedisStreamConsumer, ReceivedEvent, event_handle_once
from exchange.outbox.models import OutboxCursor, OutboxEvent, ProcessedEvent, Topic
from exchange.outbox.relay import RELAY_LOCK_ID, outbox_pending, outbox_relay
from exchange.outbox.services import (Event, outbox_emit, outbox_emit_many, outbox_prune,
                                      outbox_requeue)
from tests.exchange.outbox.conftest import all_stream_events, published_ids, rows, stream_events


def emit(key: str, n: int, topic: str = Topic.ORDERS, start: int = 0) -> None:
    with transaction.atomic():
        outbox_emit_many([Event(topic, key, "test.event", {"n": start + i, "key": key}) for i in range(n)])


class SwitchableRedis:
    """A client factory for the bus that can point at a socket where no Redis listens."""

    def __init__(self, tmp_path):
        self.down = redis.Redis.from_url(f"unix://{tmp_path}/no-redis.sock", socket_connect_timeout=1)
        self.is_down = False

    def __call__(self):
        return self.down if self.is_down else get_redis()


def cursor_state() -> OutboxCursor:
    return OutboxCursor.objects.get(id=1)


def refuse_topic(client, topic: str) -> None:
    """Make Redis refuse every XADD to ``topic``'s stream (WRONGTYPE), as a broker refuses a message."""
    client.delete(stream_name(topic))
    client.set(stream_name(topic), "not a stream")


def test_rolled_back_transaction_writes_and_publishes_nothing(bus, redis_app):
    """An event emitted in a transaction that rolls back leaves no row and is
    never published; one that commits is."""
    with pytest.raises(RuntimeError):
        with transaction.atomic():
            outbox_emit(topic=Topic.ORDERS, key="BTC-USDT", event_type="order.accepted", payload={"order_id": 1})
            raise RuntimeError("the change fails after the event was written")
    with transaction.atomic():
        with pytest.raises(RuntimeError), transaction.atomic():  # a savepoint rolled back inside a commit
            outbox_emit(topic=Topic.ORDERS, key="BTC-USDT", event_type="order.accepted", payload={"order_id": 2})
            raise RuntimeError
        outbox_emit(topic=Topic.ORDERS, key="BTC-USDT", event_type="order.accepted", payload={"order_id": 3})

    result = outbox_relay(bus=bus)

    assert result.published == 1
    assert [event["data"]["order_id"] for event in all_stream_events(redis_app)] == [3]
    assert OutboxEvent.objects.count() == 1


def test_emitting_needs_a_transaction_and_costs_the_commit_nothing_more(bus, redis_app):
    """Outside a transaction emitting is a programming error; inside one it writes
    the rows and nothing else: no after-commit callback, no Redis command (the
    relay polls)."""
    with pytest.raises(AssertionError):
        outbox_emit(topic=Topic.ORDERS, key="K", event_type="x", payload={})

    def redis_commands() -> int:
        return redis_app.info("stats")["total_commands_processed"]

    start = redis_commands()
    info_itself = redis_commands() - start
    before = redis_commands()
    with transaction.atomic():
        for i in range(3):
            outbox_emit(topic=Topic.BALANCES, key="7", event_type="x", payload={"i": i})
        assert connection.run_on_commit == []
    assert redis_commands() - before == info_itself
    assert OutboxEvent.objects.count() == 3


def test_envelope_and_payload_types(bus, redis_app):
    """Decimals travel as exact strings, never floats; the envelope carries id, type, version, key, sequence."""
    from decimal import Decimal

    with transaction.atomic():
        row = outbox_emit(topic=Topic.TRADES, key="BTC-USDT", event_type="trade.executed", sequence=42,
                          payload={"price": Decimal("65000.10"), "quantity": Decimal("0.00000001")})
    outbox_relay(bus=bus)

    [event] = stream_events(redis_app, Topic.TRADES)
    assert event["event_id"] == str(row.event_id)
    assert (event["type"], event["version"], event["key"], event["sequence"]) == ("trade.executed", 1, "BTC-USDT", 42)
    assert event["data"] == {"price": "65000.1", "quantity": "0.00000001"}
    received = ReceivedEvent.parse(redis_app.xrange("bus:trade.events")[0][1][b"event"])
    assert received.event_id == row.event_id and received.occurred_at.tzinfo is not None


def test_a_payload_built_in_sql_is_stored_and_published_as_written(bus, redis_app):
    """The payload column is ``json``: what a writer built in SQL (as the matcher and
    the ledger do, with json_build_object) is stored and published byte for byte,
    with no conversion that would reorder its keys (``jsonb`` sorts them), and key
    lookups still find it."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("""
            INSERT INTO exchange_outboxevent (topic, key, event_type, payload)
            VALUES ('trade.events', 'BTC-USDT', 'trade.executed',
                    json_build_object('trade_id', 7, 'price', trim_scale(65000.100::numeric)::text, 'fee', NULL))
        """)
    outbox_relay(bus=bus)

    [(_, fields)] = redis_app.xrange(stream_name(Topic.TRADES))
    assert fields[b"event"].endswith(b', "data": {"trade_id" : 7, "price" : "65000.1", "fee" : null}}')
    [row] = rows(payload__trade_id=7)
    assert row.payload == {"trade_id": 7, "price": "65000.1", "fee": None}
    assert not rows(payload__trade_id=8)


def test_bus_down_moves_nothing_and_everything_goes_out_in_order_when_it_returns(bus, redis_app, tmp_path,
                                                                                 settings, caplog):
    """With the bus unreachable no event is marked or set aside: the cursor stays,
    the relay waits for its backoff (kept in the cursor) and from the
    OUTBOX_MAX_ATTEMPTS-th failure logs the alert; once the bus is back every
    event goes out, each key in id order, with no operator action."""
    settings.OUTBOX_MAX_ATTEMPTS = 2
    client = SwitchableRedis(tmp_path)
    flaky = RedisStreamBus(client_factory=client)
    emit("A", 3)
    emit("B", 2)
    client.is_down = True

    down = outbox_relay(bus=flaky)

    assert (down.published, down.unconfirmed, down.bus_unavailable) == (0, 5, True)
    assert not OutboxEvent.objects.exclude(delivery=None).exists()
    first = cursor_state()
    assert first.bus_attempts == 1 and first.bus_retry_at > timezone.now() and "redis" in first.bus_error
    assert published_ids(redis_app) == []
    assert outbox_relay(bus=flaky).bus_unavailable  # backing off: not even tried
    assert cursor_state().bus_attempts == 1

    OutboxCursor.objects.update(bus_retry_at=timezone.now() - timedelta(seconds=1))
    with caplog.at_level("WARNING", logger="exchange.outbox.relay"):
        outbox_relay(bus=flaky)
    assert cursor_state().bus_attempts == 2
    assert any(getattr(record, "alert", None) == "outbox_bus_unavailable" for record in caplog.records)
    assert metrics.snapshot()["bus_attempts"] == 2 and metrics.snapshot()["unconfirmed"] == 10

    client.is_down = False
    emit("A", 2, start=3)
    emit("C", 2)
    OutboxCursor.objects.update(bus_retry_at=timezone.now() - timedelta(seconds=1))
    back = outbox_relay(bus=flaky)

    assert back.published == 9 and not outbox_pending()[0]
    assert (cursor_state().bus_attempts, cursor_state().bus_error, cursor_state().bus_retry_at) == (0, "", None)
    events = stream_events(redis_app, Topic.ORDERS)
    for key, count in (("A", 5), ("B", 2), ("C", 2)):
        assert [e["data"]["n"] for e in events if e["key"] == key] == list(range(count))
    assert [e["event_id"] for e in events] == [str(r.event_id) for r in rows()]


def test_a_refused_event_is_set_aside_its_key_waits_and_requeue_sends_them_in_order(bus, redis_app, settings,
                                                                                     caplog):
    """The bus refuses the events of one topic and takes the others: the first
    refused event of each key becomes its head (RETRY, backoff), the key's later
    events wait behind it, other keys and topics go on. After
    OUTBOX_MAX_ATTEMPTS refusals the head is FAILED (alert, counted); new events
    of the key keep waiting; requeued after the cause is fixed, the head goes out
    first and then what waited, in id order, and the key flows again."""
    settings.OUTBOX_MAX_ATTEMPTS = 2
    settings.OUTBOX_BACKOFF_BASE_SECONDS = 0
    refuse_topic(redis_app, Topic.MARKETS)
    emit("M1", 2, topic=Topic.MARKETS)
    emit("A", 2)
    emit("M2", 1, topic=Topic.MARKETS)

    first = outbox_relay(bus=bus)

    assert (first.published, first.refused, first.set_aside) == (2, 2, 3)
    by_key = {(r.key, r.payload["n"]): r for r in rows()}
    assert [(by_key["M1", n].delivery, by_key["M1", n].attempts) for n in (0, 1)] == [("RETRY", 1), ("WAITING", 0)]
    assert (by_key["M2", 0].delivery, by_key["A", 0].delivery) == ("RETRY", None)
    assert "WRONGTYPE" in by_key["M1", 0].last_error
    assert [e["key"] for e in stream_events(redis_app, Topic.ORDERS)] == ["A", "A"]

    emit("M1", 1, topic=Topic.MARKETS, start=2)  # behind the head of M1
    emit("A", 1, start=2)
    with caplog.at_level("ERROR", logger="exchange.outbox.relay"):
        second = outbox_relay(bus=bus)

    assert second.failed == 2 and second.published == 1
    assert {r.key: r.delivery for r in rows(topic=Topic.MARKETS, attempts__gt=0)} == {"M1": "FAILED", "M2": "FAILED"}
    assert [r.delivery for r in rows(key="M1")] == ["FAILED", "WAITING", "WAITING"]
    assert any(getattr(record, "alert", None) == "outbox_event_failed" for record in caplog.records)
    assert metrics.snapshot()["failed"] == 2 and metrics.snapshot()["backlog"]["WAITING"] == 2
    assert outbox_relay(bus=bus).published == 0 and not outbox_pending()[0]  # FAILED waits for an operator

    redis_app.delete(stream_name(Topic.MARKETS))  # the cause fixed
    assert outbox_requeue(ids=[r.id for r in rows()]) == 2
    requeued = outbox_relay(bus=bus)

    assert requeued.published == 4 and not OutboxEvent.objects.exclude(delivery=None).exists()
    markets = stream_events(redis_app, Topic.MARKETS)
    assert [e["data"]["n"] for e in markets if e["key"] == "M1"] == [0, 1, 2]
    emit("M1", 1, topic=Topic.MARKETS, start=3)
    assert outbox_relay(bus=bus).published == 1
    assert [e["data"]["n"] for e in stream_events(redis_app, Topic.MARKETS) if e["key"] == "M1"] == [0, 1, 2, 3]


def test_redis_out_of_memory_is_an_unavailable_bus_not_a_refusal(bus, redis_app):
    """An error reply about the server (OOM with maxmemory reached) is not about
    the messages: nothing is set aside, the cursor stays and backs off; once
    Redis has memory again everything goes out."""
    emit("A", 3)
    policy = redis_app.config_get("maxmemory-policy")["maxmemory-policy"]
    redis_app.config_set("maxmemory-policy", "noeviction")
    redis_app.config_set("maxmemory", "1")
    try:
        full = outbox_relay(bus=bus)
    finally:
        redis_app.config_set("maxmemory", "0")
        redis_app.config_set("maxmemory-policy", policy)

    assert (full.published, full.refused, full.unconfirmed, full.bus_unavailable) == (0, 0, 3, True)
    assert not OutboxEvent.objects.exclude(delivery=None).exists()
    assert "OutOfMemory" in cursor_state().bus_error
    OutboxCursor.objects.update(bus_retry_at=timezone.now() - timedelta(seconds=1))
    assert outbox_relay(bus=bus).published == 3


def test_a_long_wait_behind_a_head_drains_in_batches(bus, redis_app):
    """When more events wait behind a head than fit in a batch, each batch sends
    the head (or the first one still waiting, promoted) and what follows it,
    until the key is clear; the order per key holds throughout."""
    refuse_topic(redis_app, Topic.MARKETS)
    emit("M", 25, topic=Topic.MARKETS)
    outbox_relay(bus=bus, batch_size=10)
    assert [r.delivery for r in rows()] == ["RETRY"] + ["WAITING"] * 24
    redis_app.delete(stream_name(Topic.MARKETS))
    OutboxEvent.objects.filter(delivery="RETRY").update(next_attempt_at=timezone.now())

    result = outbox_relay(bus=bus, batch_size=10)

    assert result.published == 25 and result.batches >= 3
    assert [e["data"]["n"] for e in stream_events(redis_app, Topic.MARKETS)] == list(range(25))
    assert not OutboxEvent.objects.exclude(delivery=None).exists()


class SlowRecordingBus(RedisStreamBus):
    """The real bus, slowed down so that two relays overlap."""

    def publish(self, messages):
        time.sleep(0.005)
        return super().publish(messages)


def test_two_relay_workers_in_parallel_publish_each_event_once_in_order(bus, redis_app):
    """Two threads relay 2,000 committed events concurrently in batches of 50:
    every event reaches the bus exactly once, in id order (so in order per key)."""
    for key in ("A", "B", "C", "D"):
        emit(key, 500)
    errors = []

    def worker():
        try:
            relay_bus = SlowRecordingBus()
            deadline = time.monotonic() + 60
            while outbox_pending()[0] and time.monotonic() < deadline:
                outbox_relay(bus=relay_bus, batch_size=50, max_batches=3)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    ids = published_ids(redis_app)
    assert len(ids) == 2000 and len(set(ids)) == 2000
    assert ids == [str(r.event_id) for r in rows()]


def test_a_relay_returns_at_once_while_another_holds_the_lock(bus, redis_app):
    """The advisory lock makes a second relay return without publishing anything."""
    emit("A", 3)
    held, release = threading.Event(), threading.Event()

    def holder():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [RELAY_LOCK_ID])
            held.set()
            release.wait(10)
        connection.close()

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(10)
    try:
        result = outbox_relay(bus=bus)
    finally:
        release.set()
        thread.join()

    assert result.locked_out and result.published == 0
    assert outbox_relay(bus=bus).published == 3


def test_redis_stream_bus_read_back_by_a_consumer_matches_the_database(bus, redis_app):
    """A consumer group reading every topic's stream handles each stored event
    once, with the stored id, type, key, sequence and payload, in id order per
    topic; a redelivery (a second consumer of the same name) changes nothing."""
    for topic, key in ((Topic.ORDERS, "BTC-USDT"), (Topic.BALANCES, "7"), (Topic.MARKETS, "BTC-USDT"),
                       (Topic.TRADES, "BTC-USDT"), (Topic.AUDIT, "system")):
        with transaction.atomic():
            outbox_emit_many([Event(topic, key, f"{topic}.test", {"i": i, "amount": "1.5"}, sequence=i)
                              for i in range(20)])
    outbox_relay(bus=bus, batch_size=30)
    seen = []
    consumer = RedisStreamConsumer(name="risk-post-trade", topics=Topic.values, handler=seen.append,
                                   client=redis_app)

    consumer.drain()

    stored = {(str(r.event_id), r.topic, r.event_type, r.key, r.sequence, r.version): r.payload for r in rows()}
    received = {(str(e.event_id), e.topic, e.type, e.key, e.sequence, e.version): e.data for e in seen}
    assert received == stored
    for topic in Topic.values:
        assert [str(e.event_id) for e in seen if e.topic == topic] == [
            str(r.event_id) for r in rows(topic=topic)]
    assert ProcessedEvent.objects.filter(consumer="risk-post-trade").count() == 100

    again = RedisStreamConsumer(name="risk-post-trade", topics=Topic.values, handler=seen.append,
                                client=redis_app, start="0")
    for stream in again.streams:  # rewind the group: everything is delivered again
        redis_app.xgroup_setid(stream, "risk-post-trade", "0")
    again.drain()
    assert len(seen) == 100 and again.handled == 0


def test_handler_failure_is_retried_and_its_effect_happens_once(bus, redis_app):
    """A handler that raises records nothing and leaves the entry unacknowledged;
    the next poll redelivers it and it runs to completion once."""
    emit("A", 2)
    outbox_relay(bus=bus)
    calls = []

    def handler(event):
        calls.append(event.data["n"])
        if len(calls) == 1:
            raise RuntimeError("crash while handling")
        OutboxEvent.objects.filter(event_id=event.event_id).update(last_error=f"handled {event.data['n']}")

    consumer = RedisStreamConsumer(name="flaky", topics=[Topic.ORDERS], handler=handler, client=redis_app)
    with pytest.raises(RuntimeError):
        consumer.poll()
    assert not ProcessedEvent.objects.exists()

    restarted = RedisStreamConsumer(name="flaky", topics=[Topic.ORDERS], handler=handler, client=redis_app,
                                    consumer_id=consumer.consumer_id)
    restarted.drain()

    assert calls == [0, 0, 1]
    assert sorted(r.last_error for r in rows()) == ["handled 0", "handled 1"]
    event = ReceivedEvent.parse(redis_app.xrange("bus:order.events")[0][1][b"event"])
    assert event_handle_once(consumer="flaky", event=event, handler=handler) is False


def test_prune_deletes_only_published_events_and_dedupe_records_older_than_their_retention(bus, redis_app):
    """Published events older than the retention go; younger ones, pending ones
    and set-aside ones stay whatever their age; dedupe records likewise."""
    emit("A", 4)
    refuse_topic(redis_app, Topic.MARKETS)
    emit("M", 1, topic=Topic.MARKETS)
    outbox_relay(bus=bus)
    emit("A", 1, start=4)  # pending: never pruned
    a = rows(key="A")
    OutboxEvent.objects.filter(id__in=[a[0].id, a[1].id]).update(created_at=timezone.now() - timedelta(days=8))
    OutboxEvent.objects.filter(id__in=[a[4].id, rows(key="M")[0].id]).update(
        created_at=timezone.now() - timedelta(days=30))
    ProcessedEvent.objects.bulk_create([ProcessedEvent(consumer="c", event_id=uuid.uuid4()) for _ in range(3)])
    ProcessedEvent.objects.filter(id__in=list(ProcessedEvent.objects.order_by("id").values_list("id", flat=True)[:2])
                                  ).update(processed_at=timezone.now() - timedelta(days=8))

    assert outbox_prune(retention_days=7, processed_retention_days=7, chunk_size=1) == (2, 2)
    assert [(r.key, r.payload["n"]) for r in rows()] == [("A", 2), ("A", 3), ("M", 0), ("A", 4)]
    assert ProcessedEvent.objects.count() == 1


def test_metrics_show_backlog_lag_and_totals(bus, redis_app, client):
    emit("A", 3)
    OutboxEvent.objects.update(created_at=timezone.now() - timedelta(seconds=30))

    before = client.get("/metrics").content.decode()
    outbox_relay(bus=bus)
    after = client.get("/metrics").content.decode()

    assert 'exchange_outbox_backlog{status="PENDING"} 3.0' in before
    lag = float(next(line.split()[-1] for line in before.splitlines()
                     if line.startswith("exchange_outbox_relay_lag_seconds")))
    assert lag >= 30
    assert 'exchange_outbox_backlog{status="PENDING"} 0.0' in after
    assert 'exchange_outbox_backlog{status="FAILED"} 0.0' in after
    assert "exchange_outbox_published_total 3.0" in after and "exchange_outbox_bus_failed_attempts 0.0" in after
