"""A Redis-stream consumer group takes over what a dead member left unacknowledged."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from django.db import transaction

from exchange.outbox.consumer import ReceivedEvent, RedisStreamConsumer, events_handle_once
from exchange.outbox.models import ProcessedEvent, Topic
from exchange.outbox.relay import outbox_relay
from exchange.outbox.services import Event, outbox_emit_many


def test_a_consumer_claims_the_entries_a_dead_member_read_and_never_acknowledged(bus, redis_app):
    """Member A reads 5 entries and dies before handling them; member B of the
    same group, once they are idle for claim_idle_ms, claims and handles them
    (once each, in stream order) before its own new entries, and acknowledges
    them; an entry trimmed from the stream meanwhile is acknowledged unhandled."""
    with transaction.atomic():
        outbox_emit_many([Event(Topic.ORDERS, "K", "test.event", {"n": n}) for n in range(5)])
    outbox_relay(bus=bus)
    seen = []
    dead = RedisStreamConsumer(name="risk", topics=[Topic.ORDERS], handler=seen.append, client=redis_app,
                               consumer_id="dead", claim_idle_ms=50)
    read = redis_app.xreadgroup("risk", "dead", {"bus:order.events": ">"}, count=10)  # read, then died
    [(_, entries)] = read
    redis_app.xdel("bus:order.events", entries[2][0])  # trimmed before anyone handled it
    with transaction.atomic():
        outbox_emit_many([Event(Topic.ORDERS, "K", "test.event", {"n": 5})])
    outbox_relay(bus=bus)
    time.sleep(0.1)

    alive = RedisStreamConsumer(name="risk", topics=[Topic.ORDERS], handler=seen.append, client=redis_app,
                                consumer_id="alive", claim_idle_ms=50)
    alive.drain()

    assert [event.data["n"] for event in seen] == [0, 1, 3, 4, 5]
    assert alive.claimed == 4 and ProcessedEvent.objects.filter(consumer="risk").count() == 5
    assert redis_app.xpending("bus:order.events", "risk")["pending"] == 0
    assert dead.handled == 0


def test_events_the_consumer_does_not_want_are_acknowledged_without_a_transaction(bus, redis_app):
    """With ``wants``, only the wanted events reach the handler and leave a dedupe record; the
    rest are acknowledged with no database work, and a later pass reads none of them again."""
    with transaction.atomic():
        outbox_emit_many([Event(Topic.ORDERS, "K", "test.event", {"n": n}) for n in range(6)])
    outbox_relay(bus=bus)
    seen = []
    consumer = RedisStreamConsumer(name="picky", topics=[Topic.ORDERS], handler=seen.append, client=redis_app,
                                   wants=lambda event: event.data["n"] % 3 == 0)
    assert consumer.drain() == 6
    assert [event.data["n"] for event in seen] == [0, 3]
    assert consumer.handled == 2 and ProcessedEvent.objects.filter(consumer="picky").count() == 2
    assert redis_app.xpending("bus:order.events", "picky")["pending"] == 0
    assert consumer.drain() == 0 and len(seen) == 2


def test_a_handler_failing_midway_leaves_only_the_entries_from_there_on_to_read_again(bus, redis_app):
    """The third of five events fails (a handler's error, or a pass that ran out of time): the
    two handled before it are acknowledged at once, so the next pass reads the last three and
    runs no transaction again for the first two."""
    with transaction.atomic():
        outbox_emit_many([Event(Topic.ORDERS, "K", "test.event", {"n": n}) for n in range(5)])
    outbox_relay(bus=bus)
    seen = []

    def fails_on_two(event):
        if event.data["n"] == 2 and not seen.count(2):
            seen.append(2)
            raise RuntimeError("handler failed")
        seen.append(event.data["n"])

    consumer = RedisStreamConsumer(name="midway", topics=[Topic.ORDERS], handler=fails_on_two, client=redis_app,
                                   consumer_id="one")
    with pytest.raises(RuntimeError):
        consumer.poll()
    assert redis_app.xpending("bus:order.events", "midway")["pending"] == 3
    assert ProcessedEvent.objects.filter(consumer="midway").count() == 2

    again = RedisStreamConsumer(name="midway", topics=[Topic.ORDERS], handler=fails_on_two, client=redis_app,
                                consumer_id="one", wants=lambda event: seen.append(("read", event.data["n"])) or True)
    assert again.drain() == 3
    assert seen == [0, 1, 2, ("read", 2), 2, ("read", 3), 3, ("read", 4), 4]
    assert redis_app.xpending("bus:order.events", "midway")["pending"] == 0


def test_a_read_handled_together_records_each_event_once_and_a_failure_falls_back_to_one_at_a_time(bus, redis_app):
    """With ``handler_many``, the wanted events of a read are handled in one call and one
    transaction. When that call fails, nothing of it is recorded and the read is handled one
    event at a time: the failing event's failure is its own, the others are handled once."""
    with transaction.atomic():
        outbox_emit_many([Event(Topic.ORDERS, "K", "test.event", {"n": n}) for n in range(6)])
    outbox_relay(bus=bus)
    calls, seen = [], []

    def many(events):
        calls.append([event.data["n"] for event in events])
        ProcessedEvent.objects.create(consumer="side-effect", event_id=events[0].event_id)  # rolled back on failure
        if len(calls) == 1:
            raise RuntimeError("the group fails")
        seen.extend(event.data["n"] for event in events)

    def one(event):
        if event.data["n"] == 4:
            raise ValueError("event 4 fails")
        seen.append(event.data["n"])

    consumer = RedisStreamConsumer(name="grouped", topics=[Topic.ORDERS], handler=one, handler_many=many,
                                   client=redis_app, wants=lambda event: event.data["n"] != 1)
    with pytest.raises(ValueError):
        consumer.poll()
    assert calls == [[0, 2, 3, 4, 5]] and seen == [0, 2, 3]
    assert not ProcessedEvent.objects.filter(consumer="side-effect").exists()
    assert redis_app.xpending("bus:order.events", "grouped")["pending"] == 2  # 4 and 5

    again = RedisStreamConsumer(name="grouped", topics=[Topic.ORDERS], handler=one, handler_many=many,
                                client=redis_app, consumer_id=consumer.consumer_id)  # the next pass
    assert again.drain() == 2
    assert calls == [[0, 2, 3, 4, 5], [4, 5]] and seen == [0, 2, 3, 4, 5]
    assert ProcessedEvent.objects.filter(consumer="grouped").count() == 5


def test_events_handled_together_skip_what_was_handled_and_a_repeat_among_them(transactional_db):
    """``events_handle_once`` hands over, in order, only the events not handled yet, once each."""
    def event(n):
        return ReceivedEvent.parse(json.dumps({
            "event_id": str(uuid.UUID(int=n)), "topic": Topic.ORDERS, "type": "test.event", "version": 1, "key": "K",
            "sequence": None, "occurred_at": "2026-12-02T00:00:00+00:00", "data": {"n": n}}))

    got = []
    assert events_handle_once(consumer="c", events=[event(1), event(2)], handler=got.append) == 2
    assert events_handle_once(consumer="c", events=[event(3), event(2), event(3), event(1), event(4)],
                              handler=got.append) == 2
    assert [[e.data["n"] for e in events] for events in got] == [[1, 2], [3, 4]]
    assert events_handle_once(consumer="c", events=[event(1)], handler=got.append) == 0 and len(got) == 2


def test_an_envelope_parses_as_json_would_whatever_its_numbers():
    """Envelopes are parsed with orjson where it gives what json gives: an integer beyond 64
    bits stays an exact integer (orjson would make it a float), NaN is read, text is text."""
    from exchange.outbox.consumer import _loads

    plain = {"event_id": "x", "data": {"price": "64999.87", "n": 12, "f": 0.5, "s": "é\u2028", "none": None}}
    assert _loads(json.dumps(plain)) == plain and _loads(json.dumps(plain).encode()) == plain
    big = {"data": {"units": 123456789012345678901234567890, "max": 2**64}}
    assert _loads(json.dumps(big)) == big and type(_loads(json.dumps(big))["data"]["units"]) is int
    assert _loads(json.dumps({"x": float("nan")}))["x"] != _loads(json.dumps({"x": float("nan")}))["x"]
