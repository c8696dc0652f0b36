"""Outbox metrics on /metrics: backlog, relay lag, published and failed totals.

The relay runs in Celery workers, /metrics is served by the web process: the
totals are counted in Redis (one INCRBY per batch) and every figure is read
at scrape time by a collector registered in the web process's registry.
"""

from __future__ import annotations

import logging

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

logger = logging.getLogger(__name__)

COUNTER_KEY = "outbox:metrics:{}"


def count(**amounts: int) -> None:
    """Add to the Redis totals (published, failed_attempts, failed); never raises."""
    try:
        from exchange.core.redis import get_redis

        pipe = get_redis().pipeline(transaction=False)
        for name, amount in amounts.items():
            if amount:
                pipe.incrby(COUNTER_KEY.format(name), amount)
        pipe.execute()
    except Exception:  # noqa: BLE001 - metrics must not fail the relay
        logger.debug("could not count outbox metrics", exc_info=True)


def snapshot() -> dict:
    """Backlog per status, age of the oldest pending row, and the totals."""
    from django.db import connection

    from exchange.core.redis import get_redis
    from exchange.outbox.models import OutboxEvent

    table = OutboxEvent._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT count(*) FILTER (WHERE status = 'PENDING'), count(*) FILTER (WHERE status = 'FAILED'),
                       COALESCE(EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE status = 'PENDING')), 0)
                FROM {table} WHERE status IN ('PENDING', 'FAILED')"""
        )
        pending, failed, lag = cursor.fetchone()
    totals = {}
    try:
        values = get_redis().mget([COUNTER_KEY.format(n) for n in ("published", "failed_attempts", "failed")])
        totals = {name: int(value or 0) for name, value in zip(("published", "failed_attempts", "failed"), values)}
    except Exception:  # noqa: BLE001
        logger.debug("could not read outbox totals", exc_info=True)
    return {"pending": pending, "failed": failed, "lag_seconds": float(lag), **totals}


class OutboxCollector:
    def describe(self):
        # Names only: without describe() registering would run a scrape (a query) at import.
        yield GaugeMetricFamily("exchange_outbox_backlog", "", labels=["status"])
        yield GaugeMetricFamily("exchange_outbox_relay_lag_seconds", "")
        for name in ("published", "failed_attempts", "failed"):
            yield CounterMetricFamily(f"exchange_outbox_{name}", "")

    def collect(self):
        try:
            data = snapshot()
        except Exception:  # noqa: BLE001 - a scrape must answer even with the database down
            logger.warning("outbox metrics unavailable", exc_info=True)
            return
        backlog = GaugeMetricFamily("exchange_outbox_backlog", "Outbox events not yet published", labels=["status"])
        backlog.add_metric(["PENDING"], data["pending"])
        backlog.add_metric(["FAILED"], data["failed"])
        yield backlog
        yield GaugeMetricFamily("exchange_outbox_relay_lag_seconds", "Age of the oldest pending outbox event",
                                value=data["lag_seconds"])
        for name, help_text in (("published", "Outbox events published"),
                                ("failed_attempts", "Outbox event publications that failed (retried)"),
                                ("failed", "Outbox events marked FAILED after the last attempt")):
            if name in data:
                yield CounterMetricFamily(f"exchange_outbox_{name}", help_text, value=data[name])


_registered = False


def register() -> None:
    global _registered
    if not _registered:
        from prometheus_client import REGISTRY

        REGISTRY.register(OutboxCollector())
        _registered = True
