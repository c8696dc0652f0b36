"""Writing outbox rows, in the caller's transaction, and kicking the relay after commit.

- ``outbox_emit`` / ``outbox_emit_many``: rows built in Python (placement,
  admin requests, audit). One INSERT per call.
- ``outbox_kick_on_commit``: what bulk emitters that insert rows with their
  own ``INSERT ... SELECT`` (the matcher's batch, the ledger) call instead.
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

import psycopg
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from exchange.outbox.models import EventJSONEncoder, OutboxEvent, Topic

logger = logging.getLogger(__name__)

KICK_KEY = "outbox:kick"


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
    SELECT e.topic, e.key, e.event_type, e.version, e.payload::jsonb, e.sequence
    FROM unnest(%s::varchar[], %s::varchar[], %s::varchar[], %s::smallint[], %s::text[], %s::bigint[])
        WITH ORDINALITY AS e(topic, key, event_type, version, payload, sequence, n)
    ORDER BY e.n
    RETURNING id, event_id, created_at, next_attempt_at
"""

_encoder = EventJSONEncoder(separators=(",", ":"))


def outbox_emit_many(events: Iterable[Event]) -> list[OutboxEvent]:
    """Write events, in order, with one INSERT; the relay is kicked after commit.

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
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_INSERT, [
            [event.topic for event in events], [str(event.key) for event in events],
            [event.event_type for event in events], [event.version for event in events],
            payloads, [event.sequence for event in events],
        ])
        inserted = sorted(cursor.fetchall())
    outbox_kick_on_commit()
    return [
        OutboxEvent(id=row_id, event_id=event_id, topic=event.topic, key=str(event.key), event_type=event.event_type,
                    version=event.version, payload=json.loads(payload),
                    sequence=event.sequence, status=OutboxEvent.Status.PENDING, attempts=0,
                    next_attempt_at=next_attempt_at, last_error="", created_at=created_at)
        for event, payload, (row_id, event_id, created_at, next_attempt_at) in zip(events, payloads, inserted)
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


def _kick() -> None:
    """Queue one relay run unless one is already queued (a Redis flag the task clears)."""
    if not settings.OUTBOX_KICK_ENABLED:
        return
    try:
        from exchange.core.redis import get_redis
        from exchange.outbox.tasks import outbox_relay as outbox_relay_task

        # The flag expires, so a kick whose task was lost is retried by the
        # next commit after a few seconds (and by beat in any case).
        if get_redis().set(KICK_KEY, 1, nx=True, px=settings.OUTBOX_KICK_TTL_MS):
            outbox_relay_task.apply_async(retry=False)
    except Exception:  # noqa: BLE001 - the change committed; beat relays it anyway
        logger.warning("could not kick the outbox relay; beat will run it", exc_info=True)


def outbox_kick_on_commit() -> None:
    """Kick the relay after the current transaction commits, at most once per transaction."""
    assert connection.in_atomic_block, "outbox rows are written in the transaction of the change they describe"
    if any(callback is _kick for _, callback, _ in connection.run_on_commit):
        return
    transaction.on_commit(_kick)


@transaction.atomic
def outbox_requeue(*, ids: Iterable[int]) -> int:
    """Put FAILED events back in the queue (attempts reset); returns how many."""
    count = OutboxEvent.objects.filter(id__in=list(ids), status=OutboxEvent.Status.FAILED).update(
        status=OutboxEvent.Status.PENDING, attempts=0, next_attempt_at=timezone.now())
    if count:
        outbox_kick_on_commit()
    return count


def outbox_prune(*, retention_days: float | None = None, chunk_size: int = 10_000) -> int:
    """Delete PUBLISHED events created more than ``retention_days`` ago (default
    OUTBOX_RETENTION_DAYS), in chunks of one transaction each; returns how many."""
    days = settings.OUTBOX_RETENTION_DAYS if retention_days is None else retention_days
    cutoff = timezone.now() - timedelta(days=days)
    table = OutboxEvent._meta.db_table
    deleted = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                f"""DELETE FROM {table} WHERE id IN (
                        SELECT id FROM {table} WHERE created_at < %s AND status = 'PUBLISHED' LIMIT %s)""",
                [cutoff, chunk_size],
            )
            count = cursor.rowcount
        deleted += count
        if count < chunk_size:
            return deleted
