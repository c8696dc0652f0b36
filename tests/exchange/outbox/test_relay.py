"""The outbox and its relay on the Redis-stream bus: rows exist exactly when the
change committed, go out in id order per key, survive a bus outage, are
published once by concurrent relays, and read back by a consumer as stored."""

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
from exchange.outbox.bus import BusError, RedisStreamBus
from exchange.outbox.consumer import RedisStreamConsumer, ReceivedEvent, event_handle_once
from exchange.outbox.models import OutboxEvent, ProcessedEvent, Topic
from exchange.outbox.relay import RELAY_LOCK_ID, outbox_relay
from exchange.outbox.services import KICK_KEY, Event, outbox_emit, outbox_emit_many, outbox_prune, outbox_requeue
from tests.exchange.outbox.conftest import all_stream_events, published_ids, rows, stream_events

PENDING, PUBLISHED, FAILED = OutboxEvent.Status.PENDING, OutboxEvent.Status.PUBLISHED, OutboxEvent.Status.FAILED


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


def test_rolled_back_transaction_writes_and_publishes_nothing(bus, redis_app):
    """An event emitted in a transaction that rolls back leaves no row, queues no kick
    and is never published; one that commits is."""
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


def test_emitting_needs_a_transaction_and_kicks_the_relay_once_per_commit(bus, redis_app):
    """Outside a transaction emitting is a programming error; inside one, several
    emits register one after-commit kick, which raises the kick flag once."""
    with pytest.raises(AssertionError):
        outbox_emit(topic=Topic.ORDERS, key="K", event_type="x", payload={})
    with transaction.atomic():
        for i in range(3):
            outbox_emit(topic=Topic.BALANCES, key="7", event_type="x", payload={"i": i})
        kicks = [callback for _, callback, _ in connection.run_on_commit]
        assert len(kicks) == 1
        assert not redis_app.exists(KICK_KEY)
    assert redis_app.exists(KICK_KEY)


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


def test_bus_down_keeps_rows_pending_and_they_go_out_in_order_per_key_when_it_returns(bus, redis_app, tmp_path):
    """With the bus unreachable the batch stays PENDING with attempts, an error and a
    backoff; rows of other keys still go out, rows of the blocked keys wait behind
    it; once it is due again everything is published, each key in id order."""
    client = SwitchableRedis(tmp_path)
    flaky = RedisStreamBus(client_factory=client)
    emit("A", 3)
    emit("B", 2)
    client.is_down = True

    down = outbox_relay(bus=flaky)

    assert (down.published, down.failed_attempts) == (0, 5)
    assert {(r.status, r.attempts) for r in rows()} == {(PENDING, 1)}
    assert all(r.next_attempt_at > timezone.now() and "redis" in r.last_error for r in rows())
    assert published_ids(redis_app) == []

    client.is_down = False
    emit("A", 2, start=3)  # behind the rows of A that wait for their retry
    emit("C", 2)  # a key with nothing waiting

    early = outbox_relay(bus=flaky)

    assert early.published == 2
    assert [e["key"] for e in all_stream_events(redis_app)] == ["C", "C"]

    OutboxEvent.objects.filter(status=PENDING).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    late = outbox_relay(bus=flaky)

    assert late.published == 7 and not OutboxEvent.objects.exclude(status=PUBLISHED).exists()
    events = stream_events(redis_app, Topic.ORDERS)
    for key, count in (("A", 5), ("B", 2), ("C", 2)):
        assert [e["data"]["n"] for e in events if e["key"] == key] == list(range(count))
    for key in ("A", "B", "C"):
        assert [e["event_id"] for e in events if e["key"] == key] == [str(r.event_id) for r in rows(key=key)]


def test_failed_after_max_attempts_alerts_blocks_its_key_until_requeued(bus, redis_app, tmp_path, settings, caplog):
    """After OUTBOX_MAX_ATTEMPTS failures rows are FAILED, an error is logged and
    counted; later rows of their key do not overtake them; requeued, all go out in order."""
    settings.OUTBOX_MAX_ATTEMPTS = 2
    settings.OUTBOX_BACKOFF_BASE_SECONDS = 0
    client = SwitchableRedis(tmp_path)
    flaky = RedisStreamBus(client_factory=client)
    emit("A", 2)
    client.is_down = True

    outbox_relay(bus=flaky)
    with caplog.at_level("ERROR", logger="exchange.outbox.relay"):
        second = outbox_relay(bus=flaky)

    assert second.failed == 2 and {r.status for r in rows()} == {FAILED}
    assert any(getattr(record, "alert", None) == "outbox_event_failed" for record in caplog.records)
    assert metrics.snapshot()["failed"] == 2 and metrics.snapshot()["failed_attempts"] == 4

    client.is_down = False
    emit("A", 1, start=2)
    emit("B", 1)
    outbox_relay(bus=flaky)
    assert [e["key"] for e in all_stream_events(redis_app)] == ["B"]

    assert outbox_requeue(ids=[r.id for r in rows()]) == 2
    outbox_relay(bus=flaky)

    assert [e["data"]["n"] for e in stream_events(redis_app, Topic.ORDERS) if e["key"] == "A"] == [0, 1, 2]
    assert not OutboxEvent.objects.exclude(status=PUBLISHED).exists()


class SlowRecordingBus(RedisStreamBus):
    """The real bus, slowed down so that two relays overlap."""

    def publish(self, messages):
        time.sleep(0.005)
        super().publish(messages)


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
            while OutboxEvent.objects.filter(status=PENDING).exists() and time.monotonic() < deadline:
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


def test_prune_deletes_only_published_rows_older_than_the_retention(bus, redis_app):
    emit("A", 4)
    outbox_relay(bus=bus)
    emit("A", 1, start=4)  # pending: never pruned
    old = rows()[:2]
    OutboxEvent.objects.filter(id__in=[r.id for r in old]).update(created_at=timezone.now() - timedelta(days=8))
    OutboxEvent.objects.filter(status=PENDING).update(created_at=timezone.now() - timedelta(days=30))

    assert outbox_prune(retention_days=7, chunk_size=1) == 2
    assert [r.payload["n"] for r in rows()] == [2, 3, 4]


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
    assert "exchange_outbox_published_total 3.0" in after
