"""Consuming events exactly once in effect.

The bus delivers at least once (the relay republishes a batch the bus did
not confirm; a consumer may crash before acknowledging). ``event_handle_once``
makes a handler's effect happen once: it inserts ``(consumer, event_id)``
into ``ProcessedEvent`` in the handler's own database transaction, so the
record exists exactly when the handler's writes committed, and a repeat is
skipped. ``RedisStreamConsumer`` reads the Redis-stream bus with a consumer
group, acknowledges an entry after its handler committed, and takes over the
entries a dead member of its group left unacknowledged.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable

import orjson
import redis
from django.conf import settings
from django.db import connection, transaction

from exchange.outbox.bus import stream_name
from exchange.outbox.models import ProcessedEvent

logger = logging.getLogger(__name__)


# orjson parses an envelope about four times as fast as json, which matters to a consumer
# that must parse every event of a busy stream to tell which it wants; but it reads an
# integer beyond 64 bits as a float. Such an integer needs a run of 19 digits or more, so
# an envelope with one (anywhere, strings included) is left to json, as is anything
# orjson refuses (NaN, which json.dumps writes). The run is looked for with translate and
# a substring search (a regular expression took as long as json itself).
_DIGITS_AS_ZERO = bytes(ord("0") if chr(byte).isdigit() and byte < 128 else ord(" ") for byte in range(256))
_LONG_RUN = b"0" * 19


def _loads(envelope: str | bytes) -> Any:
    raw = envelope.encode() if isinstance(envelope, str) else envelope
    if _LONG_RUN not in raw.translate(_DIGITS_AS_ZERO):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


@dataclass(frozen=True)
class ReceivedEvent:
    event_id: uuid.UUID
    topic: str
    type: str
    version: int
    key: str
    sequence: int | None
    occurred_at: datetime
    data: dict[str, Any]

    @classmethod
    def parse(cls, envelope: str | bytes) -> "ReceivedEvent":
        body = _loads(envelope)
        return cls(
            event_id=uuid.UUID(body["event_id"]),
            topic=body["topic"],
            type=body["type"],
            version=body["version"],
            key=body["key"],
            sequence=body["sequence"],
            occurred_at=datetime.fromisoformat(body["occurred_at"]),
            data=body["data"],
        )


_MARK = f"""
    INSERT INTO {ProcessedEvent._meta.db_table} (consumer, event_id, processed_at)
    VALUES (%s, %s, now()) ON CONFLICT DO NOTHING
"""


def event_handle_once(*, consumer: str, event: ReceivedEvent, handler: Callable[[ReceivedEvent], None]) -> bool:
    """Run ``handler(event)`` in one transaction unless ``consumer`` already
    handled this event id; returns whether it ran. If the handler raises,
    nothing is recorded and a redelivery runs it again."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_MARK, [consumer, event.event_id])
            if cursor.rowcount == 0:
                return False
        handler(event)
    return True


_MARK_MANY = f"""
    INSERT INTO {ProcessedEvent._meta.db_table} (consumer, event_id, processed_at)
    SELECT %s, event_id, now() FROM unnest(%s::uuid[]) AS event_id
    ON CONFLICT DO NOTHING RETURNING event_id
"""


def events_handle_once(*, consumer: str, events: list[ReceivedEvent],
                       handler: Callable[[list[ReceivedEvent]], None]) -> int:
    """``event_handle_once`` for several events in one transaction: ``handler`` gets, in
    their order, the events ``consumer`` has not handled yet (an event repeated among them
    once); returns how many. If the handler raises, nothing is recorded."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_MARK_MANY, [consumer, "{" + ",".join(str(event.event_id) for event in events) + "}"])
            marked = {event_id for (event_id,) in cursor.fetchall()}
        new = []
        for event in events:
            if event.event_id in marked:
                marked.discard(event.event_id)
                new.append(event)
        if new:
            handler(new)
    return len(new)


class RedisStreamConsumer:
    """A consumer group over the topics' streams on the Redis-stream bus.

    ``poll()`` handles what is new (and, first, what this consumer read
    before without acknowledging); each entry is acknowledged only after
    ``event_handle_once`` returned, so a crash redelivers it and the dedupe
    skips it if its effect had committed. Entries of one stream arrive in
    stream order, so order per key holds for a single consumer.

    Several consumers of one group share the entries; when one dies, what it
    read and did not acknowledge stays in the group's pending list. Every
    ``claim_idle_ms / 2`` a poll first claims (XAUTOCLAIM) the entries idle
    for ``claim_idle_ms`` (OUTBOX_CONSUMER_CLAIM_IDLE_MS) and handles them:
    they are older than what it reads next. An entry trimmed from the stream
    before anyone handled it is acknowledged and skipped (nothing to handle).

    ``wants(event)``, when given, says which events the handler acts on; the
    others are acknowledged without a transaction or a dedupe record. A
    consumer that needs a few kinds of a busy topic (most of ``order.events``
    is orders accepted or changing state) then costs the database nothing for
    the rest.

    ``handler_many(events)``, when given, handles the wanted events of one read
    of a stream together, in one transaction (``events_handle_once``): one
    commit and one dedupe statement per read instead of per event. It must
    have the effect of ``handler`` on each event in turn. If it raises, the
    read is handled again one event at a time with ``handler``, so that a
    failure is the failing event's only.
    """

    def __init__(self, *, name: str, topics: list[str], handler: Callable[[ReceivedEvent], None],
                 client: redis.Redis | None = None, consumer_id: str | None = None, start: str = "0",
                 claim_idle_ms: int | None = None, wants: Callable[[ReceivedEvent], bool] | None = None,
                 handler_many: Callable[[list[ReceivedEvent]], None] | None = None):
        if client is None:
            from exchange.core.redis import get_redis

            client = get_redis()
        self.name = name
        self.client = client
        self.handler = handler
        self.handler_many = handler_many
        self.wants = wants
        self.streams = [stream_name(topic) for topic in topics]
        self.consumer_id = consumer_id or f"{socket.gethostname()}-{os.getpid()}"
        self.claim_idle_ms = settings.OUTBOX_CONSUMER_CLAIM_IDLE_MS if claim_idle_ms is None else claim_idle_ms
        for stream in self.streams:
            try:
                client.xgroup_create(stream, name, id=start, mkstream=True)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise
        self._recovering = True
        self._claimed_at = float("-inf")
        self.handled = 0
        self.claimed = 0

    def poll(self, *, count: int = 500, block_ms: int | None = None) -> int:
        """Read up to ``count`` entries per stream and handle them; returns how
        many entries were read (``self.handled`` counts the new effects)."""
        entries = []
        if (time.monotonic() - self._claimed_at) * 1000 >= self.claim_idle_ms / 2:
            self._claimed_at = time.monotonic()
            entries = self._claim(count)
        if not entries and self._recovering:
            entries = self.client.xreadgroup(self.name, self.consumer_id, {s: "0" for s in self.streams}, count=count)
            if not any(messages for _, messages in entries):
                self._recovering, entries = False, []
        if not entries and not self._recovering:
            entries = self.client.xreadgroup(self.name, self.consumer_id, {s: ">" for s in self.streams},
                                             count=count, block=block_ms)
        read = 0
        for stream, messages in entries or []:
            if self.handler_many is not None and self._handled_together(messages):
                read += len(messages)
                if messages:
                    self.client.xack(stream, self.name, *(entry_id for entry_id, _ in messages))
                continue
            acked = []
            try:
                for entry_id, fields in messages:
                    if fields:  # empty: trimmed from the stream before it was handled
                        event = ReceivedEvent.parse(fields[b"event"])
                        wanted = self.wants is None or self.wants(event)
                        if wanted and event_handle_once(consumer=self.name, event=event, handler=self.handler):
                            self.handled += 1
                    acked.append(entry_id)
            finally:
                # What was handled is acknowledged even when a handler raised (or a pass ran out of
                # time) in the middle: only the entries from there on are read again.
                read += len(acked)
                if acked:
                    self.client.xack(stream, self.name, *acked)
        return read

    def _handled_together(self, messages: list) -> bool:
        """Handle the wanted events of ``messages`` with ``handler_many`` in one transaction;
        False (nothing recorded) if it raised."""
        events = [ReceivedEvent.parse(fields[b"event"]) for _, fields in messages if fields]
        wanted = [event for event in events if self.wants is None or self.wants(event)]
        if not wanted:
            return True
        try:
            self.handled += events_handle_once(consumer=self.name, events=wanted, handler=self.handler_many)
        except Exception as error:  # noqa: BLE001 - one event at a time next: the failure is that event's
            logger.info("consumer %s: %d events together failed (%r); one at a time", self.name, len(wanted), error)
            return False
        return True

    def _claim(self, count: int) -> list:
        """Take over the group's entries idle for ``claim_idle_ms``: [(stream, entries)]."""
        claimed = []
        for stream in self.streams:
            start = "0-0"
            while True:
                reply = self.client.xautoclaim(stream, self.name, self.consumer_id, self.claim_idle_ms, start,
                                               count=count)
                start, entries = reply[0], reply[1]  # Redis 7 adds a third element: the ids it deleted
                if any(entry_id is None for entry_id, _ in entries):
                    # Redis 6.2 claims trimmed entries without naming them: the read of
                    # this consumer's own pending entries acknowledges them.
                    self._recovering = True
                entries = [(entry_id, fields) for entry_id, fields in entries if entry_id is not None]
                if entries:
                    claimed.append((stream, entries))
                    self.claimed += len(entries)
                if start in (b"0-0", "0-0"):
                    break
        return claimed

    def drain(self, *, count: int = 500) -> int:
        """Poll until nothing is left to read; returns how many entries were read."""
        total = 0
        while True:
            read = self.poll(count=count)
            total += read
            if not read and not self._recovering:
                return total
