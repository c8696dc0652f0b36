"""The operators' dashboard: the back office's index page shows the venue at a glance.

Panels, each shown to staff who may view what it summarizes:

- markets: status, matcher heartbeat (alive, age, backlog) and last price;
- activity: per market, quote volume and trades per hour over the last 24 hours
  (from the matchers' one-minute candles), as bar charts;
- orders by status (all orders; cached for ``ORDERS_BY_STATUS_TTL_S`` because
  counting a large order table costs a scan);
- open risk alerts by severity (``risk.RiskAlert``; the panel appears once
  the risk app has that model);
- the outbox backlog (pending and failed events, age of the oldest);
- money waiting for staff: withdrawals to review and four-eyes requests to approve.

Reading is all it does. Cost per page view: one query per panel, plus one
Redis read per market for the heartbeats.
"""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

from django.apps import apps
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Q, Sum
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from exchange.backoffice.charts import bar_chart
from exchange.backoffice.display import amount_text, places

ACTIVITY_HOURS = 24
ORDERS_BY_STATUS_TTL_S = 30


def dashboard_context(request) -> dict:
    user = request.user
    panels: dict = {}
    if user.has_perm("exchange.view_market"):
        panels["markets"] = markets_health()
    if user.has_perm("orders.view_trade"):
        panels["activity"] = market_activity(hours=ACTIVITY_HOURS)
    if user.has_perm("orders.view_order"):
        panels["orders_by_status"] = orders_by_status()
    alert_model = risk_alert_model()
    if alert_model is not None and user.has_perm("risk.view_riskalert"):
        panels["risk_alerts"] = risk_alerts_open(alert_model)
    if user.has_perm("exchange.view_outboxevent"):
        panels["outbox"] = outbox_backlog()
    if user.has_perm("wallet.view_withdrawal"):
        panels["money"] = money_waiting()
    return {"dashboard": panels}


def markets_health() -> list[dict]:
    from exchange.models import Market
    from matching import stream
    from matching.models import MarketState
    from django.conf import settings

    last_prices = dict(MarketState.objects.values_list("market_id", "last_price"))
    rows = []
    now = time.time()
    for market in Market.objects.order_by("symbol"):
        beat = stream.heartbeat_read(market.symbol)
        age = None if beat is None else now - beat["at"]
        rows.append({
            "symbol": market.symbol,
            "status": market.status,
            "alive": age is not None and age <= settings.MATCHER_STALE_AFTER_S,
            "age_s": None if age is None else f"{age:.1f}",
            "backlog": None if beat is None else beat.get("backlog"),
            "last_price": amount_text(last_prices.get(market.pk), places(market.tick_size))
            if last_prices.get(market.pk) is not None else "-",
        })
    return rows


def market_activity(*, hours: int) -> list[dict]:
    """Per market: quote volume and trade count per hour, oldest first, with empty hours as zero."""
    from exchange.models import Market

    end = timezone.now().replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=hours)
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT market_id, date_trunc('hour', opened_at), sum(quote_volume), sum(trade_count)
               FROM orders_candle WHERE opened_at >= %s AND opened_at < %s GROUP BY 1, 2""",
            [start, end],
        )
        buckets = {(market_id, hour): (volume, trades) for market_id, hour, volume, trades in cursor.fetchall()}
    hours_list = [start + timedelta(hours=index) for index in range(hours)]
    rows = []
    for market in Market.objects.select_related("quote").order_by("symbol"):
        quote = market.quote
        volumes, trades = [], []
        for hour in hours_list:
            volume, count = buckets.get((market.pk, hour), (Decimal(0), 0))
            label = hour.strftime("%Y-%m-%d %H:00 UTC")
            volumes.append((label, volume, f"{amount_text(volume, quote.precision)} {quote.code}"))
            trades.append((label, count, f"{count} trades"))
        total_volume = sum((volume for _, volume, _ in volumes), Decimal(0))
        total_trades = sum(count for _, count, _ in trades)
        rows.append({
            "symbol": market.symbol,
            "volume": f"{amount_text(total_volume, quote.precision)} {quote.code}",
            "trades": total_trades,
            "volume_chart": bar_chart(volumes, label=f"{market.symbol} volume per hour"),
            "trades_chart": bar_chart(trades, label=f"{market.symbol} trades per hour", colour="#79aec8"),
        })
    return rows


def orders_by_status() -> list[tuple[str, int]]:
    from orders.models import Order, OrderStatus

    def count() -> list[tuple[str, int]]:
        counts = dict(Order.objects.values_list("status").annotate(n=Count("id")).order_by())
        return [(status, counts.get(status, 0)) for status in OrderStatus.values]

    return cache.get_or_set("backoffice:orders_by_status", count, ORDERS_BY_STATUS_TTL_S)


def risk_alert_model():
    """``risk.RiskAlert`` once the risk app defines it, else None (the panel is then not shown)."""
    try:
        return apps.get_model("risk", "RiskAlert")
    except LookupError:
        return None


def risk_alerts_open(model) -> dict:
    rows = (model.objects.exclude(status="RESOLVED").values_list("severity").annotate(n=Count("id"))
            .order_by("severity"))
    return {"by_severity": list(rows), "url": _changelist_url("risk", "riskalert")}


def outbox_backlog() -> dict:
    from exchange.outbox import metrics

    snapshot = metrics.snapshot()
    return {"pending": snapshot.get("pending"), "failed": snapshot.get("failed"),
            "oldest_s": f"{snapshot.get('lag_seconds', 0):.1f}", "url": _changelist_url("exchange", "outboxevent")}


def money_waiting() -> dict:
    from wallet.models import MoneyAction, Withdrawal

    requested = (Withdrawal.objects.filter(status=Withdrawal.Status.REQUESTED)
                 .values_list("asset__code", "asset__precision").annotate(n=Count("id"), total=Sum("amount"))
                 .order_by("asset__code"))
    withdrawals = [{"asset": code, "count": n, "total": amount_text(total, precision)}
                   for code, precision, n, total in requested]
    pending = MoneyAction.objects.filter(status=MoneyAction.Status.PENDING).aggregate(
        n=Count("id"), withdrawals=Count("id", filter=Q(kind=MoneyAction.Kind.WITHDRAWAL_APPROVE)))
    return {"withdrawals": withdrawals, "approvals_pending": pending["n"],
            "withdrawal_url": _changelist_url("wallet", "withdrawal"),
            "approvals_url": _changelist_url("wallet", "moneyaction")}


def _changelist_url(app_label: str, model_name: str) -> str | None:
    try:
        return reverse(f"admin:{app_label}_{model_name}_changelist")
    except NoReverseMatch:
        return None
