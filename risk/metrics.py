"""Risk metrics on /metrics: refusals by code, alerts by kind and severity, active kill switches.

Refusals happen in every web process and in the matchers, and /metrics is
served by whichever web process the scraper reaches, so they are counted in
one Redis hash (one HINCRBY per refusal, never on an accepted order) and read
at scrape time; alerts and restrictions are counted in the database then.
"""

from __future__ import annotations

import logging

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

logger = logging.getLogger(__name__)

REJECTS_KEY = "risk:metrics:rejects"


def reject_count(code: str, amount: int = 1) -> None:
    """Count refusals with ``code``; never raises (a metric must not fail an order's answer)."""
    try:
        from exchange.core.redis import get_redis

        get_redis().hincrby(REJECTS_KEY, code, amount)
    except Exception:  # noqa: BLE001
        logger.debug("could not count a risk refusal", exc_info=True)


def snapshot() -> dict:
    from django.db.models import Count

    from exchange.core.redis import get_redis
    from risk.models import RiskAlert, TradingRestriction

    alerts = list(RiskAlert.objects.values_list("kind", "severity", "status").annotate(n=Count("id")))
    active = dict(TradingRestriction.objects.filter(lifted_at__isnull=True).values_list("kind").annotate(n=Count("id")))
    try:
        rejects = {code.decode(): int(n) for code, n in get_redis().hgetall(REJECTS_KEY).items()}
    except Exception:  # noqa: BLE001
        logger.debug("could not read risk refusals", exc_info=True)
        rejects = {}
    return {"alerts": alerts, "restrictions": active, "rejects": rejects}


class RiskCollector:
    def describe(self):
        yield CounterMetricFamily("exchange_risk_rejects", "", labels=["code"])
        yield CounterMetricFamily("exchange_risk_alerts", "", labels=["kind", "severity"])
        yield GaugeMetricFamily("exchange_risk_alerts_unresolved", "", labels=["kind", "severity"])
        yield GaugeMetricFamily("exchange_risk_restrictions_active", "", labels=["kind"])

    def collect(self):
        try:
            data = snapshot()
        except Exception:  # noqa: BLE001 - a scrape answers even with the database down
            logger.warning("risk metrics unavailable", exc_info=True)
            return
        from risk.models import TradingRestriction

        rejects = CounterMetricFamily("exchange_risk_rejects", "Orders and cancels refused by the risk checks",
                                      labels=["code"])
        for code, n in sorted(data["rejects"].items()):
            rejects.add_metric([code], n)
        yield rejects
        raised = CounterMetricFamily("exchange_risk_alerts", "Surveillance alerts raised", labels=["kind", "severity"])
        unresolved = GaugeMetricFamily("exchange_risk_alerts_unresolved", "Surveillance alerts not yet resolved",
                                       labels=["kind", "severity"])
        totals: dict[tuple, int] = {}
        open_: dict[tuple, int] = {}
        for kind, severity, status, n in data["alerts"]:
            totals[(kind, severity)] = totals.get((kind, severity), 0) + n
            if status != "RESOLVED":
                open_[(kind, severity)] = open_.get((kind, severity), 0) + n
        for labels, n in sorted(totals.items()):
            raised.add_metric(list(labels), n)
        for labels, n in sorted(open_.items()):
            unresolved.add_metric(list(labels), n)
        yield raised
        yield unresolved
        active = GaugeMetricFamily("exchange_risk_restrictions_active", "Kill switches on", labels=["kind"])
        for kind in TradingRestriction.Kind.values:
            active.add_metric([kind], data["restrictions"].get(kind, 0))
        yield active


_registered = False


def register() -> None:
    global _registered
    if not _registered:
        from prometheus_client import REGISTRY

        REGISTRY.register(RiskCollector())
        _registered = True
