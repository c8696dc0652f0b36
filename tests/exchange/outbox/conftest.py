"""Outbox fixtures: a clean bus (the Redis streams) and helpers to read it back.

Tests commit for real (``transactional_db``): the relay publishes what
committed, from its own transactions, as in production.
"""

from __future__ import annotations

import json

import pytest

from exchange.outbox import metrics
from exchange.outbox.bus import RedisStreamBus, reset_bus, stream_name
from exchange.outbox.models import OutboxEvent, Topic


@pytest.fixture
def bus(redis_app, transactional_db):
    """The Redis-stream bus on the application Redis, emptied first. The
    relay's metric counts still in memory at the end go to Redis before
    ``redis_app`` empties it, so that no test sees another's."""
    reset_bus()
    yield RedisStreamBus()
    metrics.flush()
    reset_bus()


def stream_events(client, topic: str) -> list[dict]:
    """Every envelope on ``topic``'s stream, in stream order."""
    return [json.loads(fields[b"event"]) for _, fields in client.xrange(stream_name(topic))]


def all_stream_events(client) -> list[dict]:
    return [event for topic in Topic.values for event in stream_events(client, topic)]


def published_ids(client) -> list[str]:
    return [event["event_id"] for event in all_stream_events(client)]


def rows(**filters) -> list[OutboxEvent]:
    return list(OutboxEvent.objects.filter(**filters).order_by("id"))
