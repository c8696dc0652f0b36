"""The relay: publishes pending outbox rows in id order, batch by batch.

One relay runs at a time: each batch's transaction first takes a
transaction-level advisory lock with ``pg_try_advisory_xact_lock``, and a
relay that does not get it returns at once (another is at work and drains
the same rows). Row locks with SKIP LOCKED alone would let a second worker
publish a later event of a key while the first still holds an earlier one.

A batch: the first OUTBOX_RELAY_BATCH_SIZE rows that are PENDING, due
(``next_attempt_at <= now``) and not behind a blocked row of their key, in
id order; the envelopes are built by PostgreSQL; one ``Bus.publish`` call;
one UPDATE marks them PUBLISHED. If the bus fails, every row of the batch
gets ``attempts + 1`` and an exponential backoff, and reaches FAILED after
OUTBOX_MAX_ATTEMPTS (an error is logged: that is the alert). A row that is
backing off or FAILED blocks the later rows of its (topic, key): they wait
rather than overtake it, until it is published (or requeued and published).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from exchange.outbox import metrics
from exchange.outbox.bus import Bus, BusError, Message, get_bus
from exchange.outbox.models import OutboxEvent

logger = logging.getLogger(__name__)

RELAY_LOCK_ID = 0x6F7574626F78  # "outbox"

TABLE = OutboxEvent._meta.db_table

_ENVELOPE = """
    json_build_object('event_id', e.event_id, 'topic', e.topic, 'type', e.event_type, 'version', e.version,
                      'key', e.key, 'sequence', e.sequence, 'occurred_at', e.created_at, 'data', e.payload)::text
"""

# Rows that hold back the later rows of their key: FAILED, or waiting for a retry.
_BLOCKERS = f"""
    SELECT topic, key, min(id) FROM {TABLE}
    WHERE attempts > 0 AND status IN ('PENDING', 'FAILED') AND (status = 'FAILED' OR next_attempt_at > now())
    GROUP BY topic, key
"""

_BATCH = f"""
    SELECT e.id, e.topic, e.key, e.event_id::text, e.event_type, {_ENVELOPE}
    FROM {TABLE} e
    WHERE e.status IN ('PENDING', 'FAILED') AND e.status = 'PENDING' AND e.next_attempt_at <= now()
      AND e.id > %s
    {{blocked}}
    ORDER BY e.id
    LIMIT %s
"""

_NOT_BLOCKED = """
    AND NOT EXISTS (
        SELECT 1 FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS b(topic, key, first_id)
        WHERE b.topic = e.topic AND b.key = e.key AND e.id > b.first_id
    )
"""

_MARK_PUBLISHED = f"""
    UPDATE {TABLE} SET status = 'PUBLISHED', published_at = now(), last_error = ''
    WHERE id = ANY(%s::bigint[])
"""

_MARK_FAILED_ATTEMPT = f"""
    UPDATE {TABLE} SET
        attempts = attempts + 1,
        last_error = %s,
        next_attempt_at = now() + make_interval(secs => LEAST(%s::float8, %s::float8 * power(2, attempts))),
        status = CASE WHEN attempts + 1 >= %s THEN 'FAILED' ELSE 'PENDING' END
    WHERE id = ANY(%s::bigint[])
    RETURNING id, status
"""


# The lock, and a plan that walks the pending index in id order and stops
# after one batch: with statistics that lag a burst of inserts, the planner
# otherwise estimates "2 rows", bitmap-scans every pending row and sorts them,
# once per batch.
_BEGIN = """
    SELECT pg_try_advisory_xact_lock(%s), set_config('enable_bitmapscan', 'off', true),
           set_config('enable_seqscan', 'off', true)
"""


@dataclass
class RelayResult:
    published: int = 0
    failed_attempts: int = 0  # rows whose publication failed this run
    failed: int = 0  # rows that reached FAILED this run
    batches: int = 0
    locked_out: bool = False  # another relay held the lock


def outbox_relay(*, bus: Bus | None = None, batch_size: int | None = None, max_batches: int | None = None) -> RelayResult:
    """Publish due rows until none is left (or ``max_batches``), or the bus fails."""
    bus = bus or get_bus()
    batch_size = batch_size or settings.OUTBOX_RELAY_BATCH_SIZE
    result = RelayResult()
    # Within one run each batch starts after the last one: the rows it just
    # published still have (dead) entries in the pending index until VACUUM,
    # and scanning them again would make a long run quadratic. A row with a
    # lower id that commits meanwhile is not lost: its transaction kicks the
    # relay again after commit, and every run starts from the lowest id.
    after_id = 0
    while max_batches is None or result.batches < max_batches:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_BEGIN, [RELAY_LOCK_ID])
            if not cursor.fetchone()[0]:
                result.locked_out = True
                break
            rows = _next_batch(cursor, batch_size, after_id)
            if not rows:
                break
            result.batches += 1
            ids = [row[0] for row in rows]
            try:
                bus.publish([Message(*row[1:]) for row in rows])
            except BusError as error:
                failed = _mark_failed_attempt(cursor, ids, str(error))
                result.failed_attempts += len(ids)
                result.failed += failed
                metrics.count(failed_attempts=len(ids), failed=failed)
                break
            cursor.execute(_MARK_PUBLISHED, [ids])
            after_id = ids[-1]
            result.published += len(ids)
            metrics.count(published=len(ids))
        if len(rows) < batch_size:
            break
    return result


def _next_batch(cursor, batch_size: int, after_id: int) -> list[tuple]:
    cursor.execute(_BLOCKERS)
    blockers = cursor.fetchall()
    if not blockers:
        cursor.execute(_BATCH.format(blocked=""), [after_id, batch_size])
    else:
        topics, keys, first_ids = (list(column) for column in zip(*blockers))
        cursor.execute(_BATCH.format(blocked=_NOT_BLOCKED), [after_id, topics, keys, first_ids, batch_size])
    return cursor.fetchall()


def _mark_failed_attempt(cursor, ids: list[int], error: str) -> int:
    cursor.execute(_MARK_FAILED_ATTEMPT, [
        error[:2000], settings.OUTBOX_BACKOFF_MAX_SECONDS, settings.OUTBOX_BACKOFF_BASE_SECONDS,
        settings.OUTBOX_MAX_ATTEMPTS, ids,
    ])
    failed = [row_id for row_id, status in cursor.fetchall() if status == OutboxEvent.Status.FAILED]
    if failed:
        logger.error(
            "outbox events FAILED after %s attempts; later events of their keys wait until they are requeued",
            settings.OUTBOX_MAX_ATTEMPTS,
            extra={"alert": "outbox_event_failed", "event_ids": failed[:50], "count": len(failed), "error": error},
        )
    else:
        logger.warning("outbox publish failed; retrying with backoff",
                       extra={"count": len(ids), "error": error})
    return len(failed)
