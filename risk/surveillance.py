"""Post-trade surveillance: rules that raise alerts (and, if configured, restrict the user).

Fed two ways, both on Celery (risk/tasks.py):

- per event, by the deduping event consumer (risk/consumer.py), inside the
  transaction that records the event as handled (so an event raises its
  alerts once): ``trade_check`` (wash trades and self-dealing, large trades)
  on ``trade.executed``, ``cancel_check`` (spoofing and layering) on an
  ``order.updated`` that cancelled an order;
- per window, by beat (``windows_check``): unusual volume or velocity
  against the user's own baseline, and concentration of a market's volume.

Settings per market and rule: ``SurveillanceRule`` rows (a market's row, else
the default row, else ``DEFAULTS`` below). Users the operator exempted
(``SurveillanceExemption``, e.g. the demo market maker, whose crossing trades
with itself are deliberate) are skipped. The rules, what each parameter
means, and how to respond to an alert: docs/RISK.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection
from django.db.models import Count, Sum
from django.utils import timezone

from exchange.audit.services import audit_system
from exchange.core.localcache import LocalCache
from matching.models import MarketState
from orders.models import Order, OrderStatus, OrderType, Trade
from risk import services
from risk.models import (
    AccountLink,
    AlertKind,
    AutoAction,
    RiskAlert,
    Severity,
    SurveillanceExemption,
    SurveillanceRule,
    TradingRestriction,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuleSettings:
    enabled: bool = True
    auto_action: str = AutoAction.NONE
    min_notional: Decimal = Decimal(0)
    window_s: int = 3600
    min_count: int = 1
    ratio: Decimal = Decimal(0)
    max_lifetime_s: int = 0


# Built-in settings, used until an operator saves a rule's row (docs/RISK.md explains each).
DEFAULTS = {
    # Trades between linked accounts (the same user, an operator link, the same IP) of at least min_notional.
    AlertKind.WASH_TRADE: RuleSettings(min_notional=Decimal(0)),
    # At least min_count orders of at least min_notional, each cancelled unfilled within max_lifetime_s
    # at a price within ratio of the last trade, inside window_s.
    AlertKind.SPOOFING: RuleSettings(min_notional=Decimal(10_000), window_s=600, min_count=3,
                                     ratio=Decimal("0.01"), max_lifetime_s=30),
    # A user's volume (or trade count) in window_s above ratio x their average per window over the
    # previous 7 days, and at least min_notional (or min_count trades).
    AlertKind.VELOCITY: RuleSettings(min_notional=Decimal(50_000), window_s=3600, min_count=100, ratio=Decimal(5)),
    # A user over ratio of a market's volume in window_s, when the market traded at least
    # min_notional in at least min_count trades.
    AlertKind.CONCENTRATION: RuleSettings(min_notional=Decimal(10_000), window_s=3600, min_count=10,
                                          ratio=Decimal("0.30")),
    # One trade of at least min_notional.
    AlertKind.LARGE_TRADE: RuleSettings(min_notional=Decimal(100_000)),
}
BASELINE_DAYS = 7


def _load_rules(_key) -> dict:
    return {(row.market_id, row.kind): RuleSettings(
        enabled=row.enabled, auto_action=row.auto_action, min_notional=row.min_notional, window_s=row.window_s,
        min_count=row.min_count, ratio=row.ratio, max_lifetime_s=row.max_lifetime_s)
        for row in SurveillanceRule.objects.all()}


def _load_exemptions(_key) -> dict[int, frozenset]:
    exempt: dict[int, set] = {}
    for user_id, kind in SurveillanceExemption.objects.values_list("user_id", "kind"):
        exempt.setdefault(user_id, set()).add(kind)
    return {user_id: frozenset(kinds) for user_id, kinds in exempt.items()}


def _load_links(_key) -> frozenset:
    return frozenset(AccountLink.objects.values_list("user_a_id", "user_b_id"))


_rules = LocalCache("risk.surveillance.rules", _load_rules, max_age_s=60)
_exemptions = LocalCache("risk.surveillance.exemptions", _load_exemptions, max_age_s=60)
_links = LocalCache("risk.surveillance.links", _load_links, max_age_s=60)


def rule(kind: str, market_id: int | None) -> RuleSettings:
    rows = _rules.get(None)
    return rows.get((market_id, kind)) or rows.get((None, kind)) or DEFAULTS[kind]


def exempt(user_id: int, kind: str) -> bool:
    kinds = _exemptions.get(None).get(user_id, ())
    return "" in kinds or kind in kinds


def linked(user_a: int, user_b: int) -> bool:
    return (min(user_a, user_b), max(user_a, user_b)) in _links.get(None)


def _raise(kind: str, severity: str, *, user_id: int, market_id: int | None, summary: str, evidence: list,
           settings: RuleSettings, counterparty_id: int | None = None, occurrences: int = 1) -> RiskAlert:
    """Raise (or add to) an alert; on a new alert apply the rule's automatic restriction."""
    alert, created = services.alert_raise(kind=kind, severity=severity, user_id=user_id, market_id=market_id,
                                          summary=summary, evidence=evidence, counterparty_id=counterparty_id,
                                          occurrences=occurrences)
    if created and settings.auto_action != AutoAction.NONE:
        from django.contrib.auth import get_user_model

        restriction_kind = (TradingRestriction.Kind.USER_FROZEN if settings.auto_action == AutoAction.FREEZE
                            else TradingRestriction.Kind.USER_CANCEL_ONLY)
        restriction, _ = services.restriction_set(
            kind=restriction_kind, user=get_user_model().objects.get(pk=user_id),
            reason=f"Surveillance alert {alert.pk}: {summary}", source="surveillance",
            audit=audit_system("risk surveillance"))
        alert.restriction = restriction
        alert.save(update_fields=["restriction", "updated_at"])
    return alert


def _d(value) -> str:
    return f"{Decimal(value).normalize():f}"


# ------------------------------------------------------------ per event


class TradeAlerts:
    """The trade rules' alerts of several trades, raised together (``raise_all``): one addition
    per (kind, user, market) carrying every trade's evidence and occurrence, with what raising
    them one trade at a time would have left: the first counterparty, the highest severity,
    the last summary. Two accounts trading with each other from one address hundreds of times
    a second then cost one statement per read of the bus, not one per trade."""

    def __init__(self):
        self._pending: dict[tuple, dict] = {}

    def add(self, kind: str, severity: str, *, user_id: int, market_id: int, summary: str, evidence: list,
            settings: RuleSettings, counterparty_id: int | None) -> None:
        pending = self._pending.get((kind, user_id, market_id))
        if pending is None:
            self._pending[(kind, user_id, market_id)] = {
                "kind": kind, "severity": severity, "user_id": user_id, "market_id": market_id, "summary": summary,
                "evidence": list(evidence), "settings": settings, "counterparty_id": counterparty_id,
                "occurrences": 1}
            return
        if services.SEVERITY_RANKS.index(severity) > services.SEVERITY_RANKS.index(pending["severity"]):
            pending["severity"] = severity
        pending["summary"] = summary
        pending["evidence"].extend(evidence)
        pending["occurrences"] += 1

    def raise_all(self) -> None:
        for pending in self._pending.values():
            _raise(**pending)
        self._pending.clear()


def trade_check(trade: dict, *, market_id: int, client_ips: dict[int, str | None],
                alerts: TradeAlerts | None = None) -> None:
    """Wash trade / self-dealing and large trade, for one ``trade.executed`` payload.
    ``client_ips``: order id -> the address that placed it. With ``alerts``, what the trade
    raises is added there for the caller to raise; without, it is raised now."""
    raise_now = alerts is None
    alerts = TradeAlerts() if raise_now else alerts
    maker, taker = trade["maker_user_id"], trade["taker_user_id"]
    notional = Decimal(trade["notional"])
    evidence = [{"trade_id": trade["trade_id"], "sequence": trade["sequence"], "price": trade["price"],
                 "quantity": trade["quantity"], "notional": trade["notional"], "maker_user_id": maker,
                 "taker_user_id": taker, "maker_order_id": trade["maker_order_id"],
                 "taker_order_id": trade["taker_order_id"], "executed_at": trade["executed_at"]}]

    wash = rule(AlertKind.WASH_TRADE, market_id)
    if wash.enabled and notional >= wash.min_notional and not (exempt(maker, AlertKind.WASH_TRADE)
                                                               or exempt(taker, AlertKind.WASH_TRADE)):
        maker_ip, taker_ip = client_ips.get(trade["maker_order_id"]), client_ips.get(trade["taker_order_id"])
        how = None
        if maker == taker:
            how, severity = "with itself", Severity.HIGH
        elif linked(maker, taker):
            how, severity = "between linked accounts", Severity.HIGH
        elif maker_ip and maker_ip == taker_ip:
            how, severity = f"between accounts trading from the same address {maker_ip}", Severity.MEDIUM
        if how is not None:
            evidence[0]["maker_ip"], evidence[0]["taker_ip"] = maker_ip, taker_ip
            alerts.add(AlertKind.WASH_TRADE, severity, user_id=taker, market_id=market_id, counterparty_id=maker,
                       summary=f"{trade['market']}: trade {trade['sequence']} of {_d(notional)} {how}",
                       evidence=evidence, settings=wash)

    large = rule(AlertKind.LARGE_TRADE, market_id)
    if large.enabled and large.min_notional > 0 and notional >= large.min_notional \
            and not exempt(taker, AlertKind.LARGE_TRADE):
        alerts.add(AlertKind.LARGE_TRADE, Severity.LOW, user_id=taker, market_id=market_id, counterparty_id=maker,
                   summary=f"{trade['market']}: trade {trade['sequence']} of {_d(notional)} (threshold "
                           f"{_d(large.min_notional)})",
                   evidence=evidence, settings=large)
    if raise_now:
        alerts.raise_all()


def cancel_check(order: dict, *, market_id: int) -> None:
    """Spoofing / layering, when an ``order.updated`` payload says an order was cancelled
    unfilled: if it was large, short-lived and near the market, count such orders of the
    user in the window."""
    if order["status"] != OrderStatus.CANCELED or Decimal(order["filled_quantity"]) != 0:
        return
    user_id = order["user_id"]
    settings = rule(AlertKind.SPOOFING, market_id)
    if not settings.enabled or exempt(user_id, AlertKind.SPOOFING) or order["price"] is None:
        return
    if order["type"] not in (OrderType.LIMIT, OrderType.LIMIT_MAKER) or order["quantity"] is None \
            or Decimal(order["price"]) * Decimal(order["quantity"]) < settings.min_notional:
        return  # this order is not one the rule counts, and an alert needs it to be: no query
    last_price = MarketState.objects.filter(market_id=market_id).values_list("last_price", flat=True).first()
    now = timezone.now()
    since = now - timedelta(seconds=settings.window_s)
    suspicious = []
    for row in (Order.objects.filter(user_id=user_id, market_id=market_id, status=OrderStatus.CANCELED,
                                     filled_quantity=0, price__isnull=False,
                                     type__in=[OrderType.LIMIT, OrderType.LIMIT_MAKER])
                .order_by("-id").values("id", "side", "price", "quantity", "created_at", "updated_at")[:500]):
        if row["updated_at"] < since:
            break
        lifetime = (row["updated_at"] - row["created_at"]).total_seconds()
        notional = row["price"] * row["quantity"]
        near = last_price is None or abs(row["price"] - last_price) <= last_price * settings.ratio
        if notional >= settings.min_notional and lifetime <= settings.max_lifetime_s and near:
            suspicious.append({"order_id": row["id"], "side": row["side"], "price": _d(row["price"]),
                               "quantity": _d(row["quantity"]), "notional": _d(notional),
                               "lifetime_s": round(lifetime, 3)})
    if order["order_id"] not in {item["order_id"] for item in suspicious} or len(suspicious) < settings.min_count:
        return
    alert = RiskAlert.objects.filter(kind=AlertKind.SPOOFING, user_id=user_id, market_id=market_id).exclude(
        status=RiskAlert.Status.RESOLVED).first()
    known = {item.get("order_id") for item in alert.evidence} if alert is not None else set()
    evidence = [item for item in suspicious if item["order_id"] not in known]
    if not evidence:
        return  # counted already (the orders' events arrive after they were all cancelled)
    severity = Severity.HIGH if len(suspicious) >= 2 * settings.min_count else Severity.MEDIUM
    _raise(AlertKind.SPOOFING, severity, user_id=user_id, market_id=market_id,
           summary=f"{order['market']}: {len(suspicious)} orders of {_d(settings.min_notional)} or more cancelled "
                   f"unfilled within {settings.max_lifetime_s} s near the last price in {settings.window_s} s",
           evidence=evidence, settings=settings)


# ------------------------------------------------------------ per window

_USER_VOLUME_SQL = f"""
    SELECT user_id, sum(notional), count(*) FROM (
        SELECT maker_user_id AS user_id, notional, id FROM {Trade._meta.db_table}
         WHERE market_id = %(market)s AND executed_at >= %(start)s AND executed_at < %(end)s
        UNION
        SELECT taker_user_id AS user_id, notional, id FROM {Trade._meta.db_table}
         WHERE market_id = %(market)s AND executed_at >= %(start)s AND executed_at < %(end)s
    ) AS sides GROUP BY user_id
"""


def _user_volumes(market_id: int, start: datetime, end: datetime) -> dict[int, tuple[Decimal, int]]:
    """Per user: (value traded, trades) in a market, each trade once per user (a self-trade once)."""
    with connection.cursor() as cursor:
        cursor.execute(_USER_VOLUME_SQL, {"market": market_id, "start": start, "end": end})
        return {user_id: (volume, count) for user_id, volume, count in cursor.fetchall()}


def _recently_alerted(kind: str, market_id: int, user_ids: list[int], since: datetime) -> set[int]:
    """Which of these users have an alert of this kind still open and added to since ``since``:
    a windowed rule re-checks every run, and adds to such an alert once per window only.
    One query for all of them."""
    if not user_ids:
        return set()
    return set(RiskAlert.objects.filter(kind=kind, market_id=market_id, user_id__in=user_ids, last_seen_at__gte=since)
               .exclude(status=RiskAlert.Status.RESOLVED).values_list("user_id", flat=True))


def windows_check(*, market_ids: list[int], now: datetime | None = None) -> int:
    """Velocity and concentration over each market's window ending ``now``; returns alerts raised or added to."""
    now = now or timezone.now()
    raised = 0
    for market_id in market_ids:
        raised += _velocity(market_id, now) + _concentration(market_id, now)
    return raised


def _velocity(market_id: int, now: datetime) -> int:
    settings = rule(AlertKind.VELOCITY, market_id)
    if not settings.enabled:
        return 0
    window = timedelta(seconds=settings.window_s)
    current = _user_volumes(market_id, now - window, now)
    if not current:
        return 0
    history = _user_volumes(market_id, now - window - timedelta(days=BASELINE_DAYS), now - window)
    windows_in_baseline = Decimal(BASELINE_DAYS * 86400) / settings.window_s
    flagged = []
    for user_id, (volume, trades) in current.items():
        if exempt(user_id, AlertKind.VELOCITY):
            continue
        past_volume, past_trades = history.get(user_id, (Decimal(0), 0))
        baseline_volume, baseline_trades = past_volume / windows_in_baseline, Decimal(past_trades) / windows_in_baseline
        by_volume = volume >= settings.min_notional and volume > settings.ratio * baseline_volume
        by_trades = trades >= settings.min_count and trades > settings.ratio * baseline_trades
        if by_volume or by_trades:
            flagged.append((user_id, volume, trades, baseline_volume, baseline_trades, by_volume and by_trades))
    alerted = _recently_alerted(AlertKind.VELOCITY, market_id, [user_id for user_id, *_ in flagged], now - window)
    raised = 0
    for user_id, volume, trades, baseline_volume, baseline_trades, both in flagged:
        if user_id in alerted:
            continue
        _raise(AlertKind.VELOCITY, Severity.MEDIUM if both else Severity.LOW,
               user_id=user_id, market_id=market_id,
               summary=f"{_d(volume)} traded in {trades} trades in {settings.window_s} s; own average per window "
                       f"over {BASELINE_DAYS} days: {_d(round(baseline_volume, 8))} in {round(baseline_trades, 2)}",
               evidence=[{"window_start": (now - window).isoformat(), "window_end": now.isoformat(),
                          "volume": _d(volume), "trades": trades, "baseline_volume": _d(round(baseline_volume, 8)),
                          "baseline_trades": str(round(baseline_trades, 2))}],
               settings=settings)
        raised += 1
    return raised


def _concentration(market_id: int, now: datetime) -> int:
    settings = rule(AlertKind.CONCENTRATION, market_id)
    if not settings.enabled:
        return 0
    start = now - timedelta(seconds=settings.window_s)
    totals = Trade.objects.filter(market_id=market_id, executed_at__gte=start, executed_at__lt=now).aggregate(
        volume=Sum("notional"), trades=Count("id"))
    market_volume, market_trades = totals["volume"] or Decimal(0), totals["trades"]
    if market_trades < settings.min_count or market_volume < settings.min_notional or market_volume == 0:
        return 0
    shares = {user_id: (volume, trades, volume / market_volume)
              for user_id, (volume, trades) in _user_volumes(market_id, start, now).items()
              if volume / market_volume > settings.ratio and not exempt(user_id, AlertKind.CONCENTRATION)}
    alerted = _recently_alerted(AlertKind.CONCENTRATION, market_id, list(shares), start)
    raised = 0
    for user_id, (volume, trades, share) in shares.items():
        if user_id in alerted:
            continue
        _raise(AlertKind.CONCENTRATION, Severity.MEDIUM, user_id=user_id, market_id=market_id,
               summary=f"{round(share * 100, 1)}% of the market's volume in {settings.window_s} s "
                       f"(threshold {round(settings.ratio * 100, 1)}%)",
               evidence=[{"window_start": start.isoformat(), "window_end": now.isoformat(), "user_volume": _d(volume),
                          "user_trades": trades, "market_volume": _d(market_volume), "market_trades": market_trades,
                          "share": str(round(share, 4))}],
               settings=settings)
        raised += 1
    return raised
