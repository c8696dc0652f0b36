"""Outbox metrics on /metrics: backlog, relay lag, published and refused totals.

The relay runs in its own process, /metrics is served by the web process:
the totals are counted in Redis (one INCRBY pipeline a second at most) and
every figure is read at scrape time by a collector registered in the web
process's registry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

logger = logging.getLogger(__name__)

COUNTER_KEY = "outbox:metrics:{}"
TOTALS = {
    "published": "Outbox events published",
    "refused": "Outbox event publications the bus refused (the event is set aside and retried)",
    "failed": "Outbox events marked FAILED after the last refusal",
    "unconfirmed": "Outbox event publications in batches the bus did not answer for (retried)",
}


FLUSH_INTERVAL_S = 1.0
_unflushed: Counter = Counter()
_flushed_at = 0.0
_lock = threading.Lock()


def count(**amounts: int) -> None:
    """Add to the totals (names of TOTALS); never raises. Counts reach Redis at
    most FLUSH_INTERVAL_S later (one INCRBY pipeline per interval, not per
    batch); ``flush()`` sends them at once."""
    with _lock:
        _unflushed.update({name: amount for name, amount in amounts.items() if amount})
        due = time.monotonic() - _flushed_at >= FLUSH_INTERVAL_S
    if due:
        flush()


def flush() -> None:
    """Send the counts not yet in Redis; never raises (they are kept for the next flush)."""
    global _flushed_at
    with _lock:
        amounts = dict(_unflushed)
        _unflushed.clear()
        _flushed_at = time.monotonic()
    if not amounts:
        return
    try:
        from exchange.core.redis import get_redis

        pipe = get_redis().pipeline(transaction=False)
        for name, amount in amounts.items():
            pipe.incrby(COUNTER_KEY.format(name), amount)
        pipe.execute()
    except Exception:  # noqa: BLE001 - metrics must not fail the relay
        logger.debug("could not count outbox metrics", exc_info=True)
        with _lock:
            _unflushed.update(amounts)


def snapshot() -> dict:
    """Events not yet published (pending, and set aside per state), the age
    of the oldest pending one, the relay's bus failures, and the totals."""
    from django.db import connection

    from exchange.core.redis import get_redis
    from exchange.outbox.models import OutboxCursor, OutboxEvent

    flush()  # this process's own counts (the relay's, when it runs here)
    table, cursor_table = OutboxEvent._meta.db_table, OutboxCursor._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT pg_snapshot_xmax(published_snapshot)::text,
                       ARRAY(SELECT pg_snapshot_xip(published_snapshot))::text[],
                       epoch_snapshot::text, epoch_after_id, bus_attempts
                FROM {cursor_table} WHERE id = 1"""
        )
        # No cursor yet (a fresh database): every event is pending.
        xmax, xip, epoch, epoch_after_id, bus_attempts = cursor.fetchone() or ("2", [], None, 0, 0)
        # Pending: committed after the cursor's snapshot (through the txid index:
        # the bounds are literals, so the planner sees how few rows they select),
        # less the part of the current epoch already published.
        cursor.execute(
            f"""SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(e.created_at)), 0)
                FROM (SELECT id, txid, created_at FROM {table} WHERE txid >= %s::xid8
                      UNION ALL
                      SELECT id, txid, created_at FROM {table} WHERE txid = ANY(%s::xid8[])) e
                WHERE NOT (%s::pg_snapshot IS NOT NULL AND pg_visible_in_snapshot(e.txid, %s::pg_snapshot)
                           AND e.id <= %s)""",
            [xmax, xip, epoch, epoch, epoch_after_id],
        )
        pending, lag = cursor.fetchone()
        cursor.execute(f"SELECT delivery, count(*) FROM {table} WHERE delivery IS NOT NULL GROUP BY delivery")
        set_aside = dict(cursor.fetchall())
    totals = {}
    try:
        values = get_redis().mget([COUNTER_KEY.format(name) for name in TOTALS])
        totals = {name: int(value or 0) for name, value in zip(TOTALS, values)}
    except Exception:  # noqa: BLE001
        logger.debug("could not read outbox totals", exc_info=True)
    backlog = {"PENDING": pending, **{state: set_aside.get(state, 0) for state in ("RETRY", "WAITING", "FAILED")}}
    return {"backlog": backlog, "lag_seconds": float(lag), "bus_attempts": bus_attempts or 0, **totals}


class OutboxCollector:
    def describe(self):
        # Names only: without describe() registering would run a scrape (a query) at import.
        yield GaugeMetricFamily("exchange_outbox_backlog", "", labels=["status"])
        yield GaugeMetricFamily("exchange_outbox_relay_lag_seconds", "")
        yield GaugeMetricFamily("exchange_outbox_bus_failed_attempts", "")
        for name in TOTALS:
            yield CounterMetricFamily(f"exchange_outbox_{name}", "")

    def collect(self):
        try:
            data = snapshot()
        except Exception:  # noqa: BLE001 - a scrape must answer even with the database down
            logger.warning("outbox metrics unavailable", exc_info=True)
            return
        backlog = GaugeMetricFamily("exchange_outbox_backlog", "Outbox events not yet published, by status",
                                    labels=["status"])
        for status, amount in data["backlog"].items():
            backlog.add_metric([status], amount)
        yield backlog
        yield GaugeMetricFamily("exchange_outbox_relay_lag_seconds", "Age of the oldest pending outbox event",
                                value=data["lag_seconds"])
        yield GaugeMetricFamily("exchange_outbox_bus_failed_attempts",
                                "Consecutive relay batches the bus did not answer for (0: the bus works)",
                                value=data["bus_attempts"])
        for name, help_text in TOTALS.items():
            if name in data:
                yield CounterMetricFamily(f"exchange_outbox_{name}", help_text, value=data[name])


_registered = False


def register() -> None:
    global _registered
    if not _registered:
        from prometheus_client import REGISTRY

        REGISTRY.register(OutboxCollector())
        _registered = True
