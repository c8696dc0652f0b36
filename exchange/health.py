"""Health endpoints: /health (per dependency), /health/live, /health/ready.

``/health`` answers JSON in the shape operators' probes already know::

    {"status": "healthy|degraded|unhealthy", "timestamp": ..., "version": ...,
     "checks": {"database": {"status": "healthy", "duration_ms": 1.2}, ...}}

A critical check failing makes the platform ``unhealthy`` (HTTP 503); a
non-critical one only ``degraded`` (HTTP 200). ``/health/ready`` is 503
unless every critical dependency answers; ``/health/live`` only says the
process serves requests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from django.conf import settings
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache

from exchange.core.redis import get_redis


@dataclass(frozen=True)
class Check:
    name: str
    probe: Callable[[], dict | None]  # raises when unhealthy; may return details
    critical: bool = True


def _check_database() -> dict:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {}


def _check_redis() -> dict:
    get_redis().ping()
    return {}


def _check_matchers() -> dict:
    """Every market's matcher heartbeat: its age and the sequence it reached.
    A missing or stale one only degrades the platform: the other markets and
    the rest of the API still work, and orders for that market get a 503."""
    from exchange.models import Market
    from matching import stream

    markets, stale = {}, []
    now = time.time()
    for symbol in Market.objects.order_by("symbol").values_list("symbol", flat=True):
        beat = stream.heartbeat_read(symbol)
        age = None if beat is None else round(now - beat["at"], 2)
        alive = age is not None and age <= settings.MATCHER_STALE_AFTER_S
        markets[symbol] = {"alive": alive, "age_s": age, "sequence": beat and beat.get("sequence")}
        if not alive:
            stale.append(symbol)
    if stale:
        raise RuntimeError("no live matcher for " + ", ".join(stale))
    return {"markets": markets}


CHECKS: list[Check] = [
    Check("database", _check_database),
    Check("redis", _check_redis),
    Check("matchers", _check_matchers, critical=False),
]


def run_checks() -> dict:
    results = {}
    status = "healthy"
    for check in CHECKS:
        started = time.perf_counter()
        try:
            details = check.probe() or {}
            result = {"status": "healthy", **details}
        except Exception as exc:  # a probe's failure is the answer, never a 500
            result = {"status": "unhealthy", "error": f"{type(exc).__name__}: {exc}"[:300]}
            if check.critical:
                status = "unhealthy"
            elif status == "healthy":
                status = "degraded"
        result["duration_ms"] = round((time.perf_counter() - started) * 1000, 2)
        results[check.name] = result
    return {
        "status": status,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "version": settings.EXCHANGE_VERSION,
        "checks": results,
    }


@never_cache
def health(request):
    report = run_checks()
    return JsonResponse(report, status=503 if report["status"] == "unhealthy" else 200)


@never_cache
def health_live(request):
    return JsonResponse({"status": "alive"})


@never_cache
def health_ready(request):
    report = run_checks()
    ready = report["status"] != "unhealthy"
    return JsonResponse({"status": "ready" if ready else "not ready", "checks": report["checks"]}, status=200 if ready else 503)
