"""Health endpoints: /health (per dependency), /health/live, /health/ready.

``/health`` answers JSON in the shape operators' probes already know::

    {"status": "healthy|degraded|unhealthy", "timestamp": ..., "version": ...,
     "checks": {"database": {"status": "healthy", "duration_ms": 1.2}, ...}}

A critical check failing makes the platform ``unhealthy`` (HTTP 503); a
non-critical one only ``degraded`` (HTTP 200). ``/health/ready`` is 503
unless every critical dependency answers; ``/health/live`` only says the
process serves requests. A failing check's ``error`` (the exception's text)
is shown only while ``HEALTH_SHOW_ERRORS`` is on, never in production.

``/metrics`` (Prometheus, django-prometheus) is open unless restricted:
with ``METRICS_TOKEN`` a scraper may send ``Authorization: Bearer <token>``,
with ``METRICS_ALLOWED_NETWORKS`` it may come from one of those networks
(``exchange.core.net.client_ip``); anything else gets 403 ``METRICS_FORBIDDEN``.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django_prometheus.exports import ExportToDjangoView

from exchange.core.net import client_ip, parse_ip
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
            result = {"status": "unhealthy"}
            if settings.HEALTH_SHOW_ERRORS:
                result["error"] = f"{type(exc).__name__}: {exc}"[:300]
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


def metrics_allowed(request) -> bool:
    """Whether ``request`` may read /metrics (see the module docstring)."""
    token, networks = settings.METRICS_TOKEN, settings.METRICS_ALLOWED_NETWORKS
    if not token and not networks:
        return True
    if token:
        header = request.headers.get("Authorization", "")
        scheme, _, presented = header.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(presented.strip().encode(), token.encode()):
            return True
    address = parse_ip(client_ip(request))
    return address is not None and any(address in _network(entry) for entry in networks)


@functools.lru_cache(maxsize=64)
def _network(entry: str):
    return ipaddress.ip_network(entry.strip(), strict=False)


@never_cache
def metrics(request):
    if not metrics_allowed(request):
        return JsonResponse({"code": "METRICS_FORBIDDEN", "message": "Metrics are restricted: send the metrics token "
                             "or scrape from an allowed network.", "field": None}, status=403)
    return ExportToDjangoView(request)


@register(Tags.security)
def metrics_networks_check(app_configs=None, **kwargs):
    """exchange.E011: every METRICS_ALLOWED_NETWORKS entry is a network (else each scrape would fail)."""
    errors = []
    for entry in settings.METRICS_ALLOWED_NETWORKS:
        try:
            _network(entry)
        except ValueError:
            errors.append(Error(f"METRICS_ALLOWED_NETWORKS: {entry!r} is not an IP network", id="exchange.E011"))
    return errors


@register(Tags.security, deploy=True)
def metrics_restricted_check(app_configs=None, **kwargs):
    """exchange.W012: /metrics is open to anyone in production."""
    if settings.METRICS_TOKEN or settings.METRICS_ALLOWED_NETWORKS:
        return []
    return [Warning("/metrics is readable by anyone.", hint="Set METRICS_TOKEN (Prometheus: authorization "
                    "credentials) or METRICS_ALLOWED_NETWORKS (the scraper's network).", id="exchange.W012")]
