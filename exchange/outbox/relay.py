"""The relay: publishes outbox events by transaction, in commit order, with a cursor.

Ids come from a sequence when a row is inserted, not when its transaction
commits, so reading the table by id either skips a late commit or
publishes it after events that committed later. The relay reads by
transaction instead (the PgQ scheme): every row records the transaction
that wrote it (``txid``, ``exchange.core.horizon.TransactionIdField``), and
the cursor (``OutboxCursor``) holds a snapshot ``S`` such that every event
written by a transaction visible in ``S`` has been published. One *epoch*
takes a new snapshot ``C`` and publishes, in id order, the events of the
transactions visible in ``C`` and not in ``S``: those that committed in
between. That set is final (every transaction visible in ``C`` has
committed), found through the txid index (``txid >= xmax(S)`` or ``txid``
in ``S``'s in-progress list), and nothing in it is ever revisited; then
``S := C``. So:

- nothing is skipped: a transaction that commits late is in the epoch
  after its commit, however old its ids are; a rolled-back one is in none
  and leaves no hole;
- events are published in commit order of their transactions (id order
  within an epoch). For one entity that is the order things happened:
  every emitter locks what the event describes before writing the row, so
  the second writer of an order, a balance or a market commits after the
  first one (docs/EVENTS.md). Waiting for an xmin horizon instead (every
  transaction older than the row finished, then id order) does not give
  that: a transaction that took its id early but waited for a lock would
  be published before the one it waited for;
- publishing writes nothing per event: one UPDATE of the cursor per batch.
  An epoch larger than a batch is published in pages (``epoch_after_id``,
  the first page through the txid index, the next ones walking the primary
  key up to ``epoch_last_id``).

Only one relay works at a time: each batch's transaction first takes a
transaction-level advisory lock, and a relay that does not get it returns
at once (another is at work on the same epoch).

When the bus does not answer for a batch (``BusError``: down, timed out),
nothing moves: the relay retries the same batch after
``min(OUTBOX_BACKOFF_MAX_SECONDS, OUTBOX_BACKOFF_BASE_SECONDS * 2^(n-1))``
(kept in the cursor), logs a warning, and from the OUTBOX_MAX_ATTEMPTS-th
failure on an error with ``"alert": "outbox_bus_unavailable"``; events wait
in order and need no operator. When the bus refuses a message (it answered
for the batch but not for that one), the relay sets it aside: the event
becomes the head of its (topic, key) with ``delivery`` RETRY, retried with
the same backoff on its own, FAILED after OUTBOX_MAX_ATTEMPTS refusals
(``"alert": "outbox_event_failed"``) until an operator requeues it; every
later event of that key is set aside behind it (WAITING) and published after
it, so none overtakes it; other keys go on. A key's set-aside events are
published head first, then the waiting ones in id order.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

import psycopg
from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from exchange.core.sql import raw_connection, server_cursor
from exchange.outbox import metrics
from exchange.outbox.bus import Bus, BusError, Refusals, get_bus
from exchange.outbox.models import OutboxCursor, OutboxEvent

logger = logging.getLogger(__name__)

RELAY_LOCK_ID = 0x6F7574626F78  # "outbox"

TABLE = OutboxEvent._meta.db_table
CURSOR = OutboxCursor._meta.db_table

# A row is laid out as a bus Message (topic, key, event_id, type, and the
# envelope of docs/EVENTS.md built by PostgreSQL), then the id: the rows go to
# the bus as they are. The envelope is concatenated rather than
# json_build_object(...): the same JSON for about 1.5 us less per event
# (to_json quotes and escapes the strings).
_COLUMNS = """
    e.topic, e.key, e.event_id::text, e.event_type,
    '{"event_id": "' || e.event_id || '", "topic": ' || to_json(e.topic) || ', "type": ' || to_json(e.event_type)
        || ', "version": ' || e.version || ', "key": ' || to_json(e.key)
        || ', "sequence": ' || COALESCE(e.sequence::text, 'null') || ', "occurred_at": ' || to_json(e.created_at)
        || ', "data": ' || e.payload::text || '}',
    e.id
"""
TOPIC, KEY, ID = 0, 1, 5  # in a row of _COLUMNS

# The lock, and plans that walk indexes in order and stop after one batch
# (with statistics that lag a burst of inserts the planner would otherwise
# bitmap-scan and sort). Those plans are the prepared statements' generic
# ones: planned once, not for every batch (PostgreSQL would otherwise keep
# planning each execution anew, its estimate for an unknown snapshot being
# worse). The cursor's commit need not wait for the disk: lost in a crash, it
# only makes the relay publish a batch again.
_BEGIN = """
    SELECT pg_try_advisory_xact_lock(%s), set_config('enable_bitmapscan', 'off', true),
           set_config('enable_seqscan', 'off', true), set_config('plan_cache_mode', 'force_generic_plan', true),
           set_config('synchronous_commit', 'off', true)
"""

# The cursor before the first epoch: every real transaction id (3 and up) is
# after it. (Migration 0009 creates the row; a test database's flush removes
# it, and the relay then creates it again.)
_CURSOR_CREATE = f"INSERT INTO {CURSOR} (id, published_snapshot) VALUES (1, '2:2:') ON CONFLICT DO NOTHING"

# Read after the lock (a new statement sees the previous holder's commit).
_CURSOR_READ = f"""
    SELECT published_snapshot::text, epoch_snapshot::text, epoch_after_id, epoch_last_id, bus_attempts,
           COALESCE(bus_retry_at > now(), false),
           EXISTS (SELECT 1 FROM {TABLE} WHERE delivery IN ('RETRY', 'FAILED'))
    FROM {CURSOR} WHERE id = 1
"""

# A new epoch: the snapshot C, the highest id given out when it was taken,
# and the first page of the events committed in C and not in S (%(s)s). The
# candidates come from the txid index only: the subquery is planned on its own
# (OFFSET 0), so that the planner cannot walk the primary key in id order
# instead, filtering the whole table, as its generic plan otherwise may.
# Every candidate this statement sees committed before its snapshot, C: no
# visibility test is needed. The envelopes are built for the page only.
_EPOCH_START = f"""
    WITH c AS MATERIALIZED (
        SELECT pg_current_snapshot() AS snapshot,
               COALESCE(pg_sequence_last_value(pg_get_serial_sequence('{TABLE}', 'id')::regclass), 0) AS last_id
    )
    SELECT p.*, c.snapshot::text, c.last_id
    FROM c LEFT JOIN (
        SELECT {_COLUMNS} FROM (
            SELECT * FROM (
                SELECT * FROM {TABLE} WHERE txid >= pg_snapshot_xmax(%(s)s::pg_snapshot)
                UNION ALL
                SELECT * FROM {TABLE} WHERE txid = ANY(ARRAY(SELECT pg_snapshot_xip(%(s)s::pg_snapshot)))
                OFFSET 0
            ) candidates
            ORDER BY id
            LIMIT %(limit)s
        ) e
    ) p ON true
    ORDER BY p.id
"""

# The next page of an epoch: along the primary key, between the last id
# published and the highest the epoch can hold. (The snapshots are parsed
# once, in InitPlans, not for every row.)
_EPOCH_NEXT = f"""
    SELECT {_COLUMNS} FROM {TABLE} e
    WHERE e.id > %(after)s AND e.id <= %(last)s
      AND pg_visible_in_snapshot(e.txid, (SELECT %(c)s::pg_snapshot))
      AND NOT pg_visible_in_snapshot(e.txid, (SELECT %(s)s::pg_snapshot))
    ORDER BY e.id
    LIMIT %(limit)s
"""

_HEADS = f"""
    SELECT id, topic, key, delivery = 'RETRY' AND next_attempt_at <= now()
    FROM {TABLE} WHERE delivery IN ('RETRY', 'FAILED') ORDER BY id
"""

# Each due head, then the events waiting behind it, in id order.
_HEADS_AND_WAITING = f"""
    SELECT h.n, p.* FROM unnest(%s::bigint[], %s::text[], %s::text[]) WITH ORDINALITY AS h(id, topic, key, n)
    CROSS JOIN LATERAL (
        SELECT {_COLUMNS} FROM {TABLE} e WHERE e.id = h.id
        UNION ALL
        (SELECT {_COLUMNS} FROM {TABLE} e WHERE e.delivery = 'WAITING' AND e.topic = h.topic AND e.key = h.key
         ORDER BY e.id LIMIT %s)
    ) p
"""

_BACKOFF = "make_interval(secs => LEAST(%(max)s::float8, %(base)s::float8 * power(2, {attempts} - 1)))"

_REFUSED = f"""
    UPDATE {TABLE} e SET
        attempts = e.attempts + 1,
        last_error = r.error,
        next_attempt_at = now() + {_BACKOFF.format(attempts="e.attempts + 1")},
        delivery = CASE WHEN e.attempts + 1 >= %(max_attempts)s THEN 'FAILED' ELSE 'RETRY' END
    FROM unnest(%(ids)s::bigint[], %(errors)s::text[]) AS r(id, error)
    WHERE e.id = r.id
    RETURNING e.id, e.delivery
"""

_WAITING = f"UPDATE {TABLE} SET delivery = 'WAITING', next_attempt_at = NULL WHERE id = ANY(%s::bigint[])"

_DELIVERED = f"UPDATE {TABLE} SET delivery = NULL, next_attempt_at = NULL WHERE id = ANY(%s::bigint[])"

# A key whose head went out with the events behind it, but not all of them:
# the first one still waiting becomes its head, due at once.
_PROMOTE = f"""
    UPDATE {TABLE} e SET delivery = 'RETRY', next_attempt_at = now()
    FROM (
        SELECT DISTINCT ON (w.topic, w.key) w.id FROM {TABLE} w
        JOIN unnest(%s::text[], %s::text[]) AS k(topic, key) ON w.topic = k.topic AND w.key = k.key
        WHERE w.delivery = 'WAITING'
          AND NOT EXISTS (SELECT 1 FROM {TABLE} h
                          WHERE h.delivery IN ('RETRY', 'FAILED') AND h.topic = w.topic AND h.key = w.key)
        ORDER BY w.topic, w.key, w.id
    ) first
    WHERE e.id = first.id
"""

_BUS_FAILED = f"""
    UPDATE {CURSOR} SET bus_attempts = bus_attempts + 1, bus_error = %(error)s, updated_at = now(),
        bus_retry_at = now() + {_BACKOFF.format(attempts="bus_attempts + 1")}
    WHERE id = 1
    RETURNING bus_attempts
"""

_BUS_OK = f"UPDATE {CURSOR} SET bus_attempts = 0, bus_error = '', bus_retry_at = NULL WHERE id = 1"

# The cursor after a batch (which the bus took: its failures are reset): the
# epoch done (S := C), or its last published id.
_EPOCH_DONE = f"""
    UPDATE {CURSOR} SET published_snapshot = %s::pg_snapshot, epoch_snapshot = NULL, epoch_after_id = 0,
        epoch_last_id = 0, bus_attempts = 0, bus_error = '', bus_retry_at = NULL, updated_at = now()
    WHERE id = 1
"""
_EPOCH_PAGE = f"""
    UPDATE {CURSOR} SET epoch_snapshot = %s::pg_snapshot, epoch_after_id = %s, epoch_last_id = %s,
        bus_attempts = 0, bus_error = '', bus_retry_at = NULL, updated_at = now()
    WHERE id = 1
"""

# Is there anything to publish? One statement, no transaction, no lock: what
# the idle relay runs every OUTBOX_RELAY_POLL_MS. Scalar subqueries ordered by
# txid with LIMIT 1, not EXISTS (which drops ORDER BY and LIMIT): the planner
# must walk the txid index from S's xmax, whatever it guesses of that value,
# and never scan the table.
_PENDING = f"""
    SELECT c.epoch_snapshot IS NOT NULL
        OR (SELECT txid FROM {TABLE} WHERE txid >= pg_snapshot_xmax(c.published_snapshot)
            ORDER BY txid LIMIT 1) IS NOT NULL
        OR (SELECT txid FROM {TABLE} WHERE txid = ANY(ARRAY(SELECT pg_snapshot_xip(c.published_snapshot)))
            ORDER BY txid LIMIT 1) IS NOT NULL
        OR (SELECT id FROM {TABLE} WHERE delivery = 'RETRY' AND next_attempt_at <= now() LIMIT 1) IS NOT NULL,
        c.bus_retry_at
    FROM {CURSOR} c WHERE c.id = 1
"""


@dataclass
class RelayResult:
    published: int = 0
    refused: int = 0  # messages the bus refused this run (their events set aside)
    failed: int = 0  # events that reached FAILED this run
    set_aside: int = 0  # events set aside this run, refused or waiting behind one
    unconfirmed: int = 0  # messages in batches the bus did not answer for
    batches: int = 0
    locked_out: bool = False  # another relay held the lock
    bus_unavailable: bool = False  # the bus did not answer, or the relay waits for its backoff


@dataclass
class _Cursor:
    published_snapshot: str
    epoch_snapshot: str | None
    epoch_after_id: int
    epoch_last_id: int
    bus_attempts: int
    backing_off: bool
    has_heads: bool


def outbox_relay(*, bus: Bus | None = None, batch_size: int | None = None, max_batches: int | None = None) -> RelayResult:
    """Publish what is due, batch by batch, until nothing is left (or
    ``max_batches``), another relay holds the lock, or the bus is unavailable.

    Each batch is one transaction of its own (so never call this inside one)."""
    assert not connection.in_atomic_block, "the relay commits each batch: call it outside any transaction"
    bus = bus or get_bus()
    batch_size = batch_size or settings.OUTBOX_RELAY_BATCH_SIZE
    result = RelayResult()
    while max_batches is None or result.batches < max_batches:
        before = (result.published, result.refused, result.failed, result.unconfirmed)
        with connection.wrap_database_errors:
            more = _batch(raw_connection(), bus, batch_size, result)
        metrics.count(**{name: after - earlier for name, after, earlier in zip(
            ("published", "refused", "failed", "unconfirmed"),
            (result.published, result.refused, result.failed, result.unconfirmed), before)})
        if not more:
            break
    return result


def outbox_pending() -> tuple[bool, datetime | None]:
    """Whether the relay has anything to do, and until when it waits for the bus (cheap: one statement)."""
    with server_cursor() as cursor:
        cursor.execute(_PENDING, prepare=True)
        row = cursor.fetchone()
    return row if row is not None else (True, None)  # no cursor yet: the relay creates it


def _batch(conn: psycopg.Connection, bus: Bus, batch_size: int, result: RelayResult) -> bool:
    """One transaction: set-aside events that are due, then the next page of
    the epoch. Returns whether more may be waiting.

    BEGIN goes in the round trip of the first statements and COMMIT in the one
    of the last: three round trips to PostgreSQL for a batch, not five.
    """
    cursor, state_cursor = psycopg.Cursor(conn), psycopg.Cursor(conn)
    with conn.pipeline():
        cursor.execute("BEGIN")
        cursor.execute(_BEGIN, [RELAY_LOCK_ID], prepare=True)
        # A statement of its own, after the lock: its snapshot sees the commit
        # of the relay that held the lock before.
        state_cursor.execute(_CURSOR_READ, prepare=True)
    locked = cursor.fetchone()[0]
    row = state_cursor.fetchone()
    finish: list[tuple[str, list]] = []  # the last statements, sent with COMMIT
    try:
        more = _batch_work(cursor, bus, batch_size, result, locked, row, finish)
        with conn.pipeline():
            for sql, params in finish:
                cursor.execute(sql, params, prepare=True)
            cursor.execute("COMMIT")
    except BaseException:
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            logger.debug("outbox relay: rollback failed (the connection is gone, and its transaction)", exc_info=True)
        raise
    return more


def _batch_work(cursor, bus: Bus, batch_size: int, result: RelayResult, locked: bool, row: tuple | None,
                finish: list) -> bool:
    if not locked:
        result.locked_out = True
        return False
    if row is None:
        cursor.execute(_CURSOR_CREATE)
        cursor.execute(_CURSOR_READ)
        row = cursor.fetchone()
    state = _Cursor(*row)
    if state.backing_off:
        result.bus_unavailable = True
        return False
    try:
        blocked: set[tuple[str, str]] = set()
        more = False
        if state.has_heads:
            more, blocked = _publish_set_aside(cursor, bus, batch_size, result)
        more = _publish_epoch(cursor, bus, batch_size, state, blocked, result, finish) or more
    except BusError as error:
        _bus_failed(cursor, str(error), result)
        return False
    if state.bus_attempts and not finish:
        finish.append((_BUS_OK, []))
    return more


def _publish_epoch(cursor, bus: Bus, batch_size: int, state: _Cursor, blocked: set, result: RelayResult,
                   finish: list) -> bool:
    if state.epoch_snapshot is None:
        cursor.execute(_EPOCH_START, {"s": state.published_snapshot, "limit": batch_size}, prepare=True)
        rows = cursor.fetchall()  # each row: _COLUMNS, C, the last id given out
        snapshot, last_id = rows[0][-2:]
        if rows[0][ID] is None:
            return False  # nothing committed since S; S stays (no write while idle)
    else:
        snapshot, last_id = state.epoch_snapshot, state.epoch_last_id
        cursor.execute(_EPOCH_NEXT, {"after": state.epoch_after_id, "last": last_id, "c": snapshot,
                                     "s": state.published_snapshot, "limit": batch_size}, prepare=True)
        rows = cursor.fetchall()
    result.batches += 1
    _publish(cursor, bus, rows, blocked, result)
    if len(rows) < batch_size:
        finish.append((_EPOCH_DONE, [snapshot]))
        # The epoch is done. One that took several batches took time: look for what committed meanwhile.
        return state.epoch_snapshot is not None
    finish.append((_EPOCH_PAGE, [snapshot, rows[-1][ID], last_id]))
    return True


def _publish(cursor, bus: Bus, rows: list[tuple], blocked: set, result: RelayResult) -> None:
    """Publish a page in its order. Rows of blocked keys wait behind their head;
    a refused row becomes its key's head and the key's later rows wait behind it
    (they are sent again after it, even those the bus stored meanwhile)."""
    waiting = [row[ID] for row in rows if (row[TOPIC], row[KEY]) in blocked]
    sent = [row for row in rows if (row[TOPIC], row[KEY]) not in blocked] if blocked else rows
    refusals = _send(bus, sent, result)
    refused_ids, errors = [], []
    if refusals:
        newly_blocked: set[tuple[str, str]] = set()
        for index, row in enumerate(sent):
            key = (row[TOPIC], row[KEY])
            if key in newly_blocked:
                waiting.append(row[ID])
            elif index in refusals:
                newly_blocked.add(key)
                refused_ids.append(row[ID])
                errors.append(refusals[index])
        blocked |= newly_blocked
    if waiting:
        cursor.execute(_WAITING, [waiting])
    if refused_ids:
        _refused(cursor, refused_ids, errors, result)
    result.set_aside += len(waiting) + len(refused_ids)
    result.published += len(rows) - len(waiting) - len(refused_ids)


def _publish_set_aside(cursor, bus: Bus, batch_size: int, result: RelayResult) -> tuple[bool, set]:
    """The due heads, each followed by the events waiting behind it, in one
    batch; returns whether more is due and the keys still blocked."""
    cursor.execute(_HEADS)
    heads = cursor.fetchall()
    due = [head for head in heads if head[3]]
    if not due:
        return False, {(head[1], head[2]) for head in heads}
    cursor.execute(_HEADS_AND_WAITING, [[h[0] for h in due], [h[1] for h in due], [h[2] for h in due], batch_size])
    groups: dict[int, list[tuple]] = defaultdict(list)
    for number, *row in cursor.fetchall():
        groups[number].append(tuple(row))
    rows = []
    for number in sorted(groups):
        rows.extend(groups[number][: batch_size - len(rows)])
    result.batches += 1
    refusals = _send(bus, rows, result)
    delivered, refused_ids, errors = [], [], []
    stopped: set[tuple[str, str]] = set()  # keys with a refused row: the rest stays WAITING behind it
    for index, row in enumerate(rows):
        key = (row[TOPIC], row[KEY])
        if key in stopped:
            continue
        if index in refusals:
            stopped.add(key)
            refused_ids.append(row[ID])
            errors.append(refusals[index])
        else:
            delivered.append(row[ID])
    cursor.execute(_DELIVERED, [delivered])
    if refused_ids:
        _refused(cursor, refused_ids, errors, result)
    result.published += len(delivered)
    promoted = 0
    unfinished = {(row[TOPIC], row[KEY]) for row in rows} - stopped  # heads gone: any event left waiting?
    if unfinished:
        topics, keys = zip(*sorted(unfinished))
        cursor.execute(_PROMOTE, [list(topics), list(keys)])
        promoted = cursor.rowcount
    cursor.execute(_HEADS)
    return bool(promoted) or len(rows) >= batch_size, {(head[1], head[2]) for head in cursor.fetchall()}


def _send(bus: Bus, rows: list[tuple], result: RelayResult) -> Refusals:
    if not rows:
        return {}
    try:
        return bus.publish(rows)  # laid out as Messages
    except BusError:
        result.unconfirmed += len(rows)
        raise


def _refused(cursor, ids: list[int], errors: list[str], result: RelayResult) -> None:
    cursor.execute(_REFUSED, {"ids": ids, "errors": [error[:2000] for error in errors],
                              "max_attempts": settings.OUTBOX_MAX_ATTEMPTS, **_backoff()})
    failed = [row_id for row_id, delivery in cursor.fetchall() if delivery == OutboxEvent.Delivery.FAILED]
    result.refused += len(ids)
    result.failed += len(failed)
    if failed:
        logger.error(
            "outbox events FAILED after %s refusals by the bus; later events of their keys wait until they are "
            "requeued", settings.OUTBOX_MAX_ATTEMPTS,
            extra={"alert": "outbox_event_failed", "event_ids": failed[:50], "count": len(failed),
                   "error": errors[0]})
    if len(failed) < len(ids):
        logger.warning("the bus refused outbox events; retrying them with backoff, their keys wait",
                       extra={"count": len(ids) - len(failed), "error": errors[0]})


def _bus_failed(cursor, error: str, result: RelayResult) -> None:
    result.bus_unavailable = True
    cursor.execute(_BUS_FAILED, {"error": error[:2000], **_backoff()})
    attempts = cursor.fetchone()[0]
    if attempts >= settings.OUTBOX_MAX_ATTEMPTS:
        logger.error("the event bus has not confirmed outbox events for %s attempts; events wait in order",
                     attempts, extra={"alert": "outbox_bus_unavailable", "attempts": attempts, "error": error})
    else:
        logger.warning("the event bus did not confirm a batch; retrying with backoff",
                       extra={"attempts": attempts, "error": error})


def _backoff() -> dict:
    return {"max": settings.OUTBOX_BACKOFF_MAX_SECONDS, "base": settings.OUTBOX_BACKOFF_BASE_SECONDS}


def outbox_relay_forever(*, stop: threading.Event, bus: Bus | None = None, poll_s: float | None = None) -> None:
    """The relay process (``manage.py run_outbox_relay``): relay while there is
    work, and poll every ``poll_s`` (OUTBOX_RELAY_POLL_MS) while there is none.

    Busy, each run drains what committed meanwhile and the next starts after
    one poll interval, so batches grow with the load; idle, one cheap query
    per interval. A standby relay (the lock held by another) polls the same way.
    """
    bus = bus or get_bus()
    poll_s = settings.OUTBOX_RELAY_POLL_MS / 1000 if poll_s is None else poll_s
    busy = False
    while not stop.is_set():
        pause = poll_s
        try:
            # After a run that published, the next run's first batch is the probe.
            pending, retry_at = (True, None) if busy else outbox_pending()
            if retry_at is not None and retry_at > timezone.now():
                pause = min(max(poll_s, (retry_at - timezone.now()).total_seconds()), 1.0)
            elif pending:
                result = outbox_relay(bus=bus)
                busy = result.published > 0 and not result.bus_unavailable
        except DatabaseError:
            logger.warning("outbox relay: database error; retrying", exc_info=True)
            connection.close()
            busy, pause = False, 1.0
        if not busy:
            metrics.flush()
        stop.wait(pause)
    metrics.flush()
