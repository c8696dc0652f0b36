"""Writing outbox rows in the caller's transaction; requeue and pruning.

- ``outbox_emit`` / ``outbox_emit_many``: rows built in Python (placement,
  admin requests, audit). One INSERT per call. Bulk emitters (the matcher's
  batch, the ledger) insert rows with their own ``INSERT ... SELECT``. No
  emitter wakes the relay: it polls (``exchange.outbox.relay``), so a commit
  that writes events costs nothing more than its INSERT.
- ``outbox_requeue`` (operator) and ``outbox_prune`` (retention).

An emitter writes its row after it locked the rows of the entity the event
describes (the order, the accounts, the market's state): two transactions
that change one entity then insert their events in commit order, so ids
order each entity's events the way they happened (docs/EVENTS.md).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from exchange.core.sql import server_cursor
from exchange.outbox.models import EventJSONEncoder, OutboxCursor, OutboxEvent, ProcessedEvent, Topic

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class Event:
    """One event to emit: ``payload`` is the versioned body of ``event_type``."""

    topic: str
    key: str
    event_type: str
    payload: dict[str, Any]
    version: int = 1
    sequence: int | None = None


def outbox_emit(*, topic: str, key: str | int, event_type: str, payload: dict[str, Any], version: int = 1,
                sequence: int | None = None) -> OutboxEvent:
    """Write one event in the current transaction (which must be open)."""
    [row] = outbox_emit_many([Event(topic, str(key), event_type, payload, version, sequence)])
    return row


_INSERT = f"""
    INSERT INTO {OutboxEvent._meta.db_table} (topic, key, event_type, version, payload, sequence)
    SELECT e.topic, e.key, e.event_type, e.version, e.payload::json, e.sequence
    FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::smallint[], %s::text[], %s::bigint[])
        WITH ORDINALITY AS e(topic, key, event_type, version, payload, sequence, n)
    ORDER BY e.n
    RETURNING id, event_id, created_at
"""

_encoder = EventJSONEncoder(separators=(",", ":"))


def outbox_emit_many(events: Iterable[Event]) -> list[OutboxEvent]:
    """Write events, in order, with one INSERT.

    One INSERT ... SELECT over arrays bound on the server rather than
    ``bulk_create``: the ORM spends about 0.2 ms of Python per row here
    (every database default is an expression to compile), this about 10 us.
    """
    assert connection.in_atomic_block, "outbox rows are written in the transaction of the change they describe"
    events = list(events)
    if not events:
        return []
    for event in events:
        assert event.topic in Topic.values, f"unknown topic {event.topic!r}"
    payloads = [_encoder.encode(event.payload) for event in events]
    with server_cursor() as cursor:
        cursor.execute(_INSERT, [
            [event.topic for event in events], [str(event.key) for event in events],
            [event.event_type for event in events], [event.version for event in events],
            payloads, [event.sequence for event in events],
        ])
        inserted = sorted(cursor.fetchall())
    return [
        OutboxEvent(id=row_id, event_id=event_id, topic=event.topic, key=str(event.key), event_type=event.event_type,
                    version=event.version, payload=json.loads(payload), sequence=event.sequence, delivery=None,
                    attempts=0, last_error="", created_at=created_at)
        for event, payload, (row_id, event_id, created_at) in zip(events, payloads, inserted)
    ]


def audit_log_emit(*, actor_id: int | None, action: str, payload: dict[str, Any], version: int = 1) -> OutboxEvent:
    """The emitter API of ``audit.logs`` (key: the actor's id, or "system").

    The audit trail itself is another issue; this publishes an entry once it
    writes one, in the same transaction."""
    return outbox_emit(topic=Topic.AUDIT, key="system" if actor_id is None else str(actor_id),
                       event_type=action, payload=payload, version=version)


_MARKET_TERMS = ("symbol", "status", "tick_size", "step_size", "min_quantity", "max_quantity", "min_notional",
                 "maker_fee_rate", "taker_fee_rate", "price_band", "stp_default")


def market_changed_emit(*, market, created: bool, changed_fields: Iterable[str], actor) -> OutboxEvent | None:
    """``market.created`` / ``market.updated`` (back office edits of a market's
    terms), with the market's terms after the change; nothing if none changed."""
    changed = [] if created else sorted(set(changed_fields) & {*_MARKET_TERMS, "base", "quote"})
    if not created and not changed:
        return None
    payload = {name: getattr(market, name) for name in _MARKET_TERMS}
    payload.update(base=market.base.code, quote=market.quote.code, changed_fields=changed,
                   changed_by=getattr(actor, "pk", None))
    return outbox_emit(topic=Topic.MARKETS, key=market.symbol,
                       event_type="market.created" if created else "market.updated", payload=payload)


@transaction.atomic
def outbox_requeue(*, ids: Iterable[int]) -> int:
    """Put FAILED events back in line: each is the head of its key, retried by
    the next relay run (attempts reset), with the events waiting behind it.
    Returns how many were FAILED."""
    return OutboxEvent.objects.filter(id__in=list(ids), delivery=OutboxEvent.Delivery.FAILED).update(
        delivery=OutboxEvent.Delivery.RETRY, attempts=0, next_attempt_at=timezone.now())


# One chunk of a prune, in id order (rows are appended in time order): delete
# the chunk's rows that match, and say where the chunk ended and whether any
# of its rows was old enough (none: the rest is newer, stop).
_PRUNE_CHUNK = """
    WITH chunk AS MATERIALIZED (
        SELECT id, {age} AS at FROM {table} WHERE id > %(after)s ORDER BY id LIMIT %(limit)s
    ), gone AS (
        DELETE FROM {table} t USING chunk WHERE t.id = chunk.id AND chunk.at < %(cutoff)s AND {condition}
        RETURNING t.id
    )
    SELECT (SELECT max(id) FROM chunk), (SELECT count(*) FROM gone),
           COALESCE((SELECT bool_or(at < %(cutoff)s) FROM chunk), false)
"""

# Published: no delivery state, and written by a transaction the cursor's
# snapshot sees as finished (so published by an earlier epoch).
_PUBLISHED = f"""
    t.delivery IS NULL
    AND t.txid < (SELECT pg_snapshot_xmin(published_snapshot) FROM {OutboxCursor._meta.db_table} WHERE id = 1)
"""


def _prune(table: str, age: str, condition: str, cutoff, chunk_size: int) -> int:
    deleted, after = 0, 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_PRUNE_CHUNK.format(table=table, age=age, condition=condition),
                           {"after": after, "limit": chunk_size, "cutoff": cutoff})
            last, count, any_old = cursor.fetchone()
        deleted += count
        if last is None or not any_old:
            return deleted
        after = last


def outbox_prune(*, retention_days: float | None = None, processed_retention_days: float | None = None,
                 chunk_size: int = 10_000) -> tuple[int, int]:
    """Delete published events created more than ``retention_days`` ago
    (OUTBOX_RETENTION_DAYS) and consumers' dedupe records older than
    ``processed_retention_days`` (OUTBOX_PROCESSED_RETENTION_DAYS), in chunks
    of one transaction each, walking each table in id order. Events set
    aside or not yet published are kept whatever their age. Returns
    (events, records) deleted."""
    now = timezone.now()
    days = settings.OUTBOX_RETENTION_DAYS if retention_days is None else retention_days
    processed_days = (settings.OUTBOX_PROCESSED_RETENTION_DAYS if processed_retention_days is None
                      else processed_retention_days)
    events = _prune(OutboxEvent._meta.db_table, "created_at", _PUBLISHED, now - timedelta(days=days), chunk_size)
    records = _prune(ProcessedEvent._meta.db_table, "processed_at", "true", now - timedelta(days=processed_days),
                     chunk_size)
    return events, records
