"""Risk writes: limits, kill switches, alerts and the operator's surveillance knowledge.

One function per kind of change, each one transaction, each writing its audit
row (``_audit``: RISK_LIMIT_SET, RISK_LIMIT_CLEAR, RISK_RESTRICTION_SET,
RISK_RESTRICTION_LIFT, docs/AUDIT.md) and moving the configuration token after commit
(``localcache.config_changed``) so every process drops its cached limits and
restrictions within 0.25 s. Callers (admin, commands, surveillance) say who
acts: ``audit`` (the request's ``audit_context``, or None), ``actor`` (the
staff user, or None: the running process is then the actor) and, for kill
switches, ``source`` (``admin``, ``command``, ``surveillance``) recorded on
the switch itself.

Kill switches act on what is already queued as well as on new requests:

- freezing a user flags every open order of theirs for cancellation and
  enqueues the markets' CANCEL_ALL commands (``orders_cancel_all_request``),
  and their orders still waiting in a stream are rejected by the matcher
  (risk/gate.py);
- halting a market or the whole exchange asks each market's matcher to halt
  (``market_status_request``, sequenced with its orders), and meanwhile the
  entry check and the matcher's admission gate refuse new orders at once.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from exchange.audit import actions
from exchange.audit.services import audit_log_record, audit_origin
from exchange.core import localcache
from exchange.core.errors import ApplicationError
from exchange.models import Market
from matching.models import MarketStatusChange
from matching.services import market_status_request
from orders.models import OPEN_STATUSES, Order
from risk.models import (
    INTEGER_LIMITS,
    LIMIT_FIELDS,
    AccountLink,
    AlertKind,
    RiskAlert,
    RiskLimit,
    Scope,
    Severity,
    TradingRestriction,
)

EVIDENCE_KEPT = 100
SEVERITY_RANKS = [Severity.LOW.value, Severity.MEDIUM.value, Severity.HIGH.value]  # in rising order


def _audit(*, action: str, model, object_id, before: dict | None, after: dict | None, market: Market | None,
           subject_user, actor, audit: dict | None) -> None:
    """The audit row of a risk change, in its transaction: who (``audit``, the request's
    ``audit_context``, else the staff ``actor``, else the running process), the scope's
    market and user, the terms before and after."""
    audit_log_record(action=action, object_type=model._meta.label_lower, object_id=object_id, before=before,
                     after=after, market=market.symbol if market is not None else "", subject_user=subject_user,
                     **audit_origin(audit, staff=actor))


def _reason(reason: str | None) -> str:
    if not reason or not reason.strip():
        raise ApplicationError("REASON_REQUIRED", "Say why.", field="reason")
    return reason.strip()


# ---------------------------------------------------------------- limits


def _limit_snapshot(row: RiskLimit | None) -> dict | None:
    if row is None:
        return None
    return {name: (None if getattr(row, name) is None else str(getattr(row, name))) for name in LIMIT_FIELDS}


def _limit_target(scope: str, market: Market | None, kyc_tier: int | None, user) -> dict:
    if scope not in Scope.values:
        raise ApplicationError("INVALID_SCOPE", f"scope must be one of {', '.join(Scope.values)}.", field="scope")
    target = {"scope": scope, "market": None, "kyc_tier": None, "user": None}
    needed = {Scope.MARKET: ("market", market), Scope.TIER: ("kyc_tier", kyc_tier), Scope.USER: ("user", user)}
    if scope in needed:
        name, value = needed[scope]
        if value is None:
            raise ApplicationError("SCOPE_TARGET_REQUIRED", f"A {scope.lower()} limit needs its {name}.", field=name)
        target[name] = value
    return target


def limit_value_parse(name: str, value) -> int | Decimal:
    """A limit's value from text or a number, validated (counts are whole numbers >= 0;
    amounts > 0; the price band a fraction strictly between 0 and 1)."""
    if name not in LIMIT_FIELDS:
        raise ApplicationError("UNKNOWN_LIMIT", f"There is no limit {name!r}.", field=name)
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ApplicationError("INVALID_LIMIT", f"{name} must be a number.", field=name) from None
    if not number.is_finite():
        raise ApplicationError("INVALID_LIMIT", f"{name} must be a number.", field=name)
    if name in INTEGER_LIMITS:
        if number != number.to_integral_value() or number < 0:
            raise ApplicationError("INVALID_LIMIT", f"{name} must be a whole number, 0 or more.", field=name)
        return int(number)
    if name == "price_band":
        if not Decimal(0) < number < Decimal(1):
            raise ApplicationError("INVALID_LIMIT", "price_band is a fraction between 0 and 1, e.g. 0.05.", field=name)
        return number
    if number <= 0:
        raise ApplicationError("INVALID_LIMIT", f"{name} must be greater than zero.", field=name)
    return number


@transaction.atomic
def risk_limit_set(*, scope: str, values: dict, market: Market | None = None, kyc_tier: int | None = None,
                   user=None, actor=None, audit: dict | None = None) -> RiskLimit | None:
    """Set some limits at one scope (the others there are kept). ``values``: limit name ->
    value, or None to clear it there; a scope left with no limit has its row deleted (and
    None is returned)."""
    if not values:
        raise ApplicationError("NOTHING_TO_SET", "Give at least one limit.", field=None)
    parsed = {name: None if value is None else limit_value_parse(name, value) for name, value in values.items()}
    if all(value is None for value in parsed.values()):
        for name in parsed:
            if name not in LIMIT_FIELDS:
                raise ApplicationError("UNKNOWN_LIMIT", f"There is no limit {name!r}.", field=name)
        if not RiskLimit.objects.filter(**_limit_target(scope, market, kyc_tier, user)).exists():
            raise ApplicationError("NOTHING_TO_SET", "Give at least one limit.", field=None)
        return risk_limit_clear(scope=scope, names=list(parsed), market=market, kyc_tier=kyc_tier, user=user,
                                actor=actor, audit=audit)
    target = _limit_target(scope, market, kyc_tier, user)
    row = RiskLimit.objects.select_for_update().filter(**target).first()
    before = _limit_snapshot(row)
    if row is None:
        row = RiskLimit(**target)
    for name, value in parsed.items():
        setattr(row, name, value)
    row.updated_by = actor
    try:
        with transaction.atomic():
            row.save()
    except IntegrityError:  # created concurrently: set on the row that won
        row = RiskLimit.objects.select_for_update().get(**target)
        before = _limit_snapshot(row)
        for name, value in parsed.items():
            setattr(row, name, value)
        row.updated_by = actor
        row.save()
    if all(getattr(row, name) is None for name in LIMIT_FIELDS):
        return risk_limit_clear(scope=scope, market=market, kyc_tier=kyc_tier, user=user, actor=actor, audit=audit)
    _audit(action=actions.RISK_LIMIT_SET, model=RiskLimit, object_id=row.pk, before=before, after=_limit_snapshot(row),
           market=market, subject_user=user, actor=actor, audit=audit)
    localcache.config_changed()
    return row


@transaction.atomic
def risk_limit_clear(*, scope: str, names: list[str] | None = None, market: Market | None = None,
                     kyc_tier: int | None = None, user=None, actor=None,
                     audit: dict | None = None) -> RiskLimit | None:
    """Clear some limits at one scope (``names``), or all of them (None): the scope's row is
    deleted when nothing is left set. Returns the row left, or None."""
    target = _limit_target(scope, market, kyc_tier, user)
    row = RiskLimit.objects.select_for_update().filter(**target).first()
    if row is None:
        raise ApplicationError("NO_SUCH_LIMIT", "No limit is set at this scope.", status_code=404)
    for name in names or ():
        if name not in LIMIT_FIELDS:
            raise ApplicationError("UNKNOWN_LIMIT", f"There is no limit {name!r}.", field=name)
    before = _limit_snapshot(row)
    for name in names or LIMIT_FIELDS:
        setattr(row, name, None)
    object_id = row.pk
    if all(getattr(row, name) is None for name in LIMIT_FIELDS):
        row.delete()
        row = None
    else:
        row.updated_by = actor
        row.save()
    _audit(action=actions.RISK_LIMIT_CLEAR, model=RiskLimit, object_id=object_id, before=before,
           after=_limit_snapshot(row), market=market, subject_user=user, actor=actor, audit=audit)
    localcache.config_changed()
    return row


# ---------------------------------------------------------- kill switches


def _restriction_snapshot(row: TradingRestriction) -> dict:
    return {"kind": row.kind, "user_id": row.user_id, "market": row.market.symbol if row.market_id else None,
            "reason": row.reason, "source": row.source, "lifted": row.lifted_at is not None,
            "lift_reason": row.lift_reason}


def _market_target_status(market: Market) -> str:
    """The status a market is heading to: its last request still waiting, else its status."""
    waiting = MarketStatusChange.objects.filter(market=market, status=MarketStatusChange.Status.REQUESTED).order_by(
        "-id").values_list("new_status", flat=True).first()
    return waiting or market.status


def _account_state_on_commit(user_id: int) -> None:
    from risk.live import account_state_publish

    transaction.on_commit(lambda: account_state_publish(user_id))


@transaction.atomic
def restriction_set(*, kind: str, reason: str, user=None, market: Market | None = None, actor=None,
                    source: str = "admin", audit: dict | None = None) -> tuple[TradingRestriction, bool]:
    """Turn a kill switch on; returns ``(restriction, created)`` (False: it was already on).

    - USER_FROZEN: the user's open orders in every market are flagged for cancellation
      and the markets' CANCEL_ALL commands enqueued; their queued new orders are
      rejected by the matcher; placement, amend and cancel-all are refused.
    - USER_CANCEL_ONLY: new orders and amendments refused (and queued ones rejected);
      cancels go through.
    - MARKET_HALTED: the market's matcher is asked to halt (in sequence); new orders
      are refused at once.
    - EXCHANGE_HALTED: every market's matcher is asked to halt; every new order,
      amendment and cancel-all is refused at once.
    """
    reason = _reason(reason)
    kinds = TradingRestriction.Kind
    if kind not in kinds.values:
        raise ApplicationError("INVALID_RESTRICTION", f"kind must be one of {', '.join(kinds.values)}.", field="kind")
    user = user if kind in (kinds.USER_FROZEN, kinds.USER_CANCEL_ONLY) else None
    market = market if kind == kinds.MARKET_HALTED else None
    if kind in (kinds.USER_FROZEN, kinds.USER_CANCEL_ONLY) and user is None:
        raise ApplicationError("USER_REQUIRED", "Say which user.", field="user")
    if kind == kinds.MARKET_HALTED and market is None:
        raise ApplicationError("MARKET_REQUIRED", "Say which market.", field="market")
    existing = TradingRestriction.objects.select_for_update().filter(
        kind=kind, user=user, market=market, lifted_at__isnull=True).first()
    if existing is not None:
        return existing, False

    if kind == kinds.USER_FROZEN:
        from orders.services import orders_cancel_all_request

        market_ids = Order.objects.filter(user=user, status__in=OPEN_STATUSES).values_list(
            "market_id", flat=True).distinct()
        for open_market in Market.objects.filter(id__in=list(market_ids)).order_by("id"):
            orders_cancel_all_request(user=user, market=open_market, audit=audit_origin(audit, staff=actor))
    elif kind == kinds.MARKET_HALTED:
        _halt(market, actor=actor, reason=reason, audit=audit)
    elif kind == kinds.EXCHANGE_HALTED:
        for each in Market.objects.order_by("id"):
            _halt(each, actor=actor, reason=reason, audit=audit)

    try:
        with transaction.atomic():
            restriction = TradingRestriction.objects.create(kind=kind, user=user, market=market, reason=reason,
                                                            source=source, created_by=actor)
    except IntegrityError:  # set concurrently by someone else
        return TradingRestriction.objects.get(kind=kind, user=user, market=market, lifted_at__isnull=True), False
    _audit(action=actions.RISK_RESTRICTION_SET, model=TradingRestriction, object_id=restriction.pk, before=None,
           after=_restriction_snapshot(restriction), market=market, subject_user=user, actor=actor, audit=audit)
    localcache.config_changed()
    if user is not None:
        _account_state_on_commit(user.pk)
    return restriction, True


def _halt(market: Market, *, actor, reason: str, audit: dict | None) -> None:
    if _market_target_status(market) != Market.Status.HALTED:
        market_status_request(market=market, new_status=Market.Status.HALTED, actor=actor, reason=reason, audit=audit)


def _resume(market: Market, *, actor, reason: str, audit: dict | None) -> None:
    if _market_target_status(market) == Market.Status.HALTED:
        market_status_request(market=market, new_status=Market.Status.TRADING, actor=actor, reason=reason,
                              audit=audit)


@transaction.atomic
def restriction_lift(*, restriction: TradingRestriction, reason: str, actor=None, source: str = "admin",
                     audit: dict | None = None) -> tuple[TradingRestriction, bool]:
    """Turn a kill switch off; returns ``(restriction, lifted)`` (False: it was already off).

    Lifting a market halt asks its matcher to resume TRADING (refused while the whole
    exchange is halted); lifting the exchange halt resumes every halted market that
    has no halt of its own."""
    reason = _reason(reason)
    kinds = TradingRestriction.Kind
    restriction = TradingRestriction.objects.select_for_update(of=("self",)).select_related("market").get(
        pk=restriction.pk)
    if restriction.lifted_at is not None:
        return restriction, False
    before = _restriction_snapshot(restriction)
    if restriction.kind == kinds.MARKET_HALTED:
        if TradingRestriction.objects.filter(kind=kinds.EXCHANGE_HALTED, lifted_at__isnull=True).exists():
            raise ApplicationError("RISK_EXCHANGE_HALTED", "The whole exchange is halted: resume it first.",
                                   status_code=409)
        _resume(restriction.market, actor=actor, reason=reason, audit=audit)
    elif restriction.kind == kinds.EXCHANGE_HALTED:
        halted_on_their_own = set(TradingRestriction.objects.filter(
            kind=kinds.MARKET_HALTED, lifted_at__isnull=True).values_list("market_id", flat=True))
        for market in Market.objects.exclude(id__in=halted_on_their_own).order_by("id"):
            _resume(market, actor=actor, reason=reason, audit=audit)
    restriction.lifted_at = timezone.now()
    restriction.lifted_by = actor
    restriction.lift_reason = reason
    restriction.lift_source = source
    restriction.save(update_fields=["lifted_at", "lifted_by", "lift_reason", "lift_source"])
    _audit(action=actions.RISK_RESTRICTION_LIFT, model=TradingRestriction, object_id=restriction.pk, before=before,
           after=_restriction_snapshot(restriction), market=restriction.market, subject_user=restriction.user_id,
           actor=actor, audit=audit)
    localcache.config_changed()
    if restriction.user_id is not None:
        _account_state_on_commit(restriction.user_id)
    return restriction, True


@transaction.atomic
def user_resume(*, user, reason: str, actor=None, source: str = "admin", audit: dict | None = None) -> int:
    """Lift every restriction of ``user`` (frozen, cancel-only); returns how many were on."""
    lifted = 0
    for restriction in TradingRestriction.objects.filter(user=user, lifted_at__isnull=True).order_by("id"):
        lifted += restriction_lift(restriction=restriction, reason=reason, actor=actor, source=source, audit=audit)[1]
    return lifted


def market_resume(*, market: Market, reason: str, actor=None, source: str = "admin", audit: dict | None = None) -> int:
    restriction = TradingRestriction.objects.filter(kind=TradingRestriction.Kind.MARKET_HALTED, market=market,
                                                    lifted_at__isnull=True).first()
    if restriction is None:
        return 0
    return int(restriction_lift(restriction=restriction, reason=reason, actor=actor, source=source, audit=audit)[1])


def exchange_resume(*, reason: str, actor=None, source: str = "admin", audit: dict | None = None) -> int:
    restriction = TradingRestriction.objects.filter(kind=TradingRestriction.Kind.EXCHANGE_HALTED,
                                                    lifted_at__isnull=True).first()
    if restriction is None:
        return 0
    return int(restriction_lift(restriction=restriction, reason=reason, actor=actor, source=source, audit=audit)[1])


# ------------------------------------------------------------------ alerts


@transaction.atomic(savepoint=False)  # atomic alone; no savepoint inside the caller's transaction (risk consumer)
def alert_raise(*, kind: str, severity: str, user_id: int, market_id: int | None, summary: str, evidence: list,
                counterparty_id: int | None = None, occurrences: int = 1) -> tuple[RiskAlert, bool]:
    """Raise an alert, or add to the one still unresolved for the same (kind, user, market).
    ``occurrences``: how many occurrences ``evidence`` stands for (the risk consumer raises
    the trades of one read together). Returns ``(alert, created)``; an alert added to comes without its evidence loaded
    (a deferred field: reading it queries the row)."""
    assert kind in AlertKind.values and severity in Severity.values
    now = timezone.now()
    alert = _alert_add(kind=kind, severity=severity, user_id=user_id, market_id=market_id, summary=summary,
                       evidence=evidence, now=now, occurrences=occurrences)
    if alert is not None:
        return alert, False
    try:
        with transaction.atomic():
            alert = RiskAlert.objects.create(kind=kind, severity=severity, user_id=user_id, market_id=market_id,
                                             counterparty_id=counterparty_id, summary=summary[:300],
                                             evidence=evidence[-EVIDENCE_KEPT:], occurrences=occurrences)
        return alert, True
    except IntegrityError:  # raised concurrently: add to it
        alert = _alert_add(kind=kind, severity=severity, user_id=user_id, market_id=market_id, summary=summary,
                           evidence=evidence, now=now, occurrences=occurrences)
        if alert is None:  # and resolved since: the caller's transaction fails, and a retry raises anew
            raise
        return alert, False


# Adding to an open alert is one statement, and the evidence (up to a hundred trades,
# tens of kilobytes) never leaves the database: in an alert storm (two accounts
# trading with each other from one address, hundreds of trades a second) reading,
# decoding, re-encoding and writing it back per trade was most of the risk
# consumer's work. The row lock is the UPDATE's own: a concurrent resolve waits, or
# makes this statement find no unresolved alert (then a new one is raised).
_ALERT_ADD_SQL = """
UPDATE risk_riskalert SET
    evidence = CASE WHEN jsonb_array_length(evidence) + jsonb_array_length(%(evidence)s::jsonb) > %(kept)s
                    THEN jsonb_path_query_array(evidence || %(evidence)s::jsonb, %(tail)s::jsonpath)
                    ELSE evidence || %(evidence)s::jsonb END,
    occurrences = occurrences + %(occurrences)s,
    last_seen_at = %(now)s,
    updated_at = %(now)s,
    summary = %(summary)s,
    severity = CASE WHEN array_position(%(ranks)s::text[], %(severity)s) > array_position(%(ranks)s::text[], severity)
                    THEN %(severity)s ELSE severity END
WHERE kind = %(kind)s AND user_id = %(user_id)s AND {market} AND status <> 'RESOLVED'
RETURNING {columns}
"""
_ALERT_FIELDS = [field for field in RiskAlert._meta.concrete_fields if field.name != "evidence"]
_ALERT_ADD = {market_is_null: _ALERT_ADD_SQL.format(
    market="market_id IS NULL" if market_is_null else "market_id = %(market_id)s",
    columns=", ".join(field.column for field in _ALERT_FIELDS)) for market_is_null in (False, True)}


def _alert_add(*, kind: str, severity: str, user_id: int, market_id: int | None, summary: str, evidence: list,
               now, occurrences: int = 1) -> RiskAlert | None:
    """Add occurrences to the unresolved alert of (kind, user, market): its evidence (the
    latest ``EVIDENCE_KEPT`` items kept), count, time and summary, its severity raised (never
    lowered). The alert without its evidence, or None when there is no unresolved one."""
    with connection.cursor() as cursor:
        cursor.execute(_ALERT_ADD[market_id is None], {
            "evidence": json.dumps(evidence), "kept": EVIDENCE_KEPT, "tail": f"$[last - {EVIDENCE_KEPT - 1} to last]",
            "now": now, "summary": summary[:300], "ranks": SEVERITY_RANKS, "severity": str(severity),
            "kind": str(kind), "user_id": user_id, "market_id": market_id, "occurrences": occurrences})
        row = cursor.fetchone()
    if row is None:
        return None
    return RiskAlert.from_db(connection.alias, [field.attname for field in _ALERT_FIELDS], row)


def _alert_locked(alert: RiskAlert) -> RiskAlert:
    return RiskAlert.objects.select_for_update().get(pk=alert.pk)


@transaction.atomic
def alert_acknowledge(*, alert: RiskAlert, actor) -> RiskAlert:
    """An operator has seen the alert and works on it (it becomes theirs if unassigned)."""
    alert = _alert_locked(alert)
    if alert.status == RiskAlert.Status.RESOLVED:
        raise ApplicationError("ALERT_RESOLVED", "The alert is already resolved.", status_code=409)
    alert.status = RiskAlert.Status.ACKNOWLEDGED
    if alert.assignee_id is None:
        alert.assignee = actor
    alert.save(update_fields=["status", "assignee", "updated_at"])
    return alert


@transaction.atomic
def alert_assign(*, alert: RiskAlert, assignee, actor) -> RiskAlert:
    alert = _alert_locked(alert)
    if alert.status == RiskAlert.Status.RESOLVED:
        raise ApplicationError("ALERT_RESOLVED", "The alert is already resolved.", status_code=409)
    alert.assignee = assignee
    alert.save(update_fields=["assignee", "updated_at"])
    return alert


@transaction.atomic
def alert_resolve(*, alert: RiskAlert, note: str, actor) -> RiskAlert:
    """Close the alert with what was found and done (a note is required)."""
    if not note or not note.strip():
        raise ApplicationError("NOTE_REQUIRED", "Say what was found and done.", field="note")
    alert = _alert_locked(alert)
    if alert.status == RiskAlert.Status.RESOLVED:
        raise ApplicationError("ALERT_RESOLVED", "The alert is already resolved.", status_code=409)
    alert.status = RiskAlert.Status.RESOLVED
    alert.resolution_note = note.strip()
    alert.resolved_by = actor
    alert.resolved_at = timezone.now()
    if alert.assignee_id is None:
        alert.assignee = actor
    alert.save(update_fields=["status", "resolution_note", "resolved_by", "resolved_at", "assignee", "updated_at"])
    return alert


# ------------------------------------------------------- operator knowledge


@transaction.atomic
def account_link_create(*, user_a, user_b, reason: str, actor=None) -> AccountLink:
    """Record that two accounts belong together: trades between them are self-dealing."""
    reason = _reason(reason)
    if user_a.pk == user_b.pk:
        raise ApplicationError("SAME_USER", "Link two different accounts.", field="user_b")
    low, high = sorted((user_a, user_b), key=lambda user: user.pk)
    link, _ = AccountLink.objects.get_or_create(user_a=low, user_b=high,
                                                defaults={"reason": reason, "created_by": actor})
    localcache.config_changed()
    return link
