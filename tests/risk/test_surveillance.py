"""Post-trade surveillance on crafted trade histories: each rule raises its alert on a true
positive and nothing on a clean history. The rules run as real Celery tasks on a worker
consuming the ``risk`` queue from the Redis broker, over the events the relay published and
the trades in PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

import pytest
from django.utils import timezone

from exchange.audit.models import AuditLog
from exchange.outbox.bus import reset_bus
from exchange.outbox.relay import outbox_relay
from orders.models import Trade
from orders.services import order_cancel
from risk import surveillance
from risk.models import AlertKind, AutoAction, RiskAlert, SurveillanceExemption, SurveillanceRule, TradingRestriction
from risk.services import account_link_create
from risk.tasks import risk_events_consume, risk_surveillance_windows
from tests.factories import UserFactory
from tests.risk.conftest import drain, fund, place, run_task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker")]


def trade(matcher, buyer, seller, price="100", quantity="1", *, buyer_ip=None, seller_ip=None, stp_mode=None):
    """One trade: the seller rests, the buyer takes."""
    place(seller, "SELL", price=price, quantity=quantity, client_ip=seller_ip)
    extra = {"stp_mode": stp_mode} if stp_mode else {}
    place(buyer, "BUY", price=price, quantity=quantity, client_ip=buyer_ip, **extra)
    drain(matcher)


def consume() -> int:
    reset_bus()
    outbox_relay()
    return run_task(risk_events_consume)


def alerts(kind: str) -> list[tuple]:
    return list(RiskAlert.objects.filter(kind=kind).order_by("id").values_list("user__username", "severity",
                                                                                "counterparty__username"))


def rule(market, kind: str, **settings) -> SurveillanceRule:
    return SurveillanceRule.objects.create(market=market, kind=kind, **settings)


# ------------------------------------------------------------------ per event


def test_wash_trades_with_oneself_linked_accounts_or_the_same_address(live_market, traders, matcher):
    """A self-trade (STP off), a trade between operator-linked accounts and one between accounts
    trading from the same address each raise a wash-trade alert naming both sides; a trade
    between unrelated accounts raises nothing."""
    alice, bob, carol = traders
    dave = UserFactory(username="dave")
    fund(dave, live_market)
    trade(matcher, alice, alice, stp_mode="NONE")
    account_link_create(user_a=bob, user_b=carol, reason="same beneficial owner")
    trade(matcher, bob, carol)
    trade(matcher, dave, alice, buyer_ip="203.0.113.5", seller_ip="203.0.113.5")
    trade(matcher, bob, dave, buyer_ip="203.0.113.6", seller_ip="198.51.100.1")  # clean
    consume()
    assert alerts(AlertKind.WASH_TRADE) == [("alice", "HIGH", "alice"), ("bob", "HIGH", "carol"),
                                            ("dave", "MEDIUM", "alice")]
    evidence = RiskAlert.objects.get(kind=AlertKind.WASH_TRADE, user=alice).evidence
    assert len(evidence) == 1 and evidence[0]["maker_user_id"] == evidence[0]["taker_user_id"] == alice.pk
    assert Trade.objects.filter(sequence=evidence[0]["sequence"], market=live_market).exists()


def test_a_clean_history_raises_nothing(live_market, traders, matcher):
    """Unrelated accounts from different addresses trading ordinary sizes: no alert at all, from
    the per-event rules or the windowed ones."""
    alice, bob, carol = traders
    trade(matcher, alice, bob, buyer_ip="203.0.113.1", seller_ip="203.0.113.2")
    trade(matcher, bob, carol, price="101", buyer_ip="203.0.113.2", seller_ip="203.0.113.3")
    trade(matcher, carol, alice, price="99", quantity="0.5")
    assert consume() > 0
    run_task(risk_surveillance_windows)
    assert not RiskAlert.objects.exists()


def test_the_demo_market_maker_is_exempt_and_repeats_add_to_one_alert(live_market, traders, matcher):
    """The exempted user's deliberate self-trades raise nothing; another user's repeated
    self-trades add to one open alert (occurrences, evidence) instead of queueing many."""
    alice, bob = traders[:2]
    SurveillanceExemption.objects.create(user=alice, reason="demo market maker: crosses its own quotes")
    for _ in range(2):
        trade(matcher, alice, alice, stp_mode="NONE")
        trade(matcher, bob, bob, stp_mode="NONE")
    consume()
    alert = RiskAlert.objects.get()
    assert (alert.user, alert.kind, alert.occurrences, len(alert.evidence)) == (bob, AlertKind.WASH_TRADE, 2, 2)


def test_the_trades_of_one_read_add_to_an_alert_as_one_at_a_time_would(live_market, traders, matcher):
    """The consumer raises the trades of one read together: bob's trade with carol from one
    address (MEDIUM), then with himself (HIGH), give one alert with both occurrences and both
    trades' evidence in order, the first counterparty, the highest severity, the last summary.
    A later read adds to that alert."""
    alice, bob, carol = traders
    trade(matcher, bob, carol, buyer_ip="203.0.113.7", seller_ip="203.0.113.7")
    trade(matcher, bob, bob, stp_mode="NONE")
    consume()
    alert = RiskAlert.objects.get()
    assert (alert.user, alert.counterparty, alert.severity, alert.occurrences) == (bob, carol, "HIGH", 2)
    assert [item["maker_user_id"] for item in alert.evidence] == [carol.pk, bob.pk]
    assert "with itself" in alert.summary
    trade(matcher, bob, alice, buyer_ip="203.0.113.8", seller_ip="203.0.113.8")
    consume()
    alert.refresh_from_db()
    assert (alert.occurrences, len(alert.evidence), alert.severity) == (3, 3, "HIGH")


def test_large_trades_above_the_market_threshold(live_market, traders, matcher):
    """With a 1000 USDT threshold for the market, a trade of exactly 1000 raises a large-trade
    alert and one of 999.99 does not; a rule may apply a restriction automatically."""
    alice, bob, carol = traders
    rule(live_market, AlertKind.LARGE_TRADE, min_notional=D(1000), auto_action=AutoAction.CANCEL_ONLY)
    trade(matcher, alice, bob, price="100", quantity="9.9999")
    consume()
    assert not RiskAlert.objects.exists()
    trade(matcher, carol, bob, price="100", quantity="10")
    consume()
    alert = RiskAlert.objects.get()
    assert (alert.user, alert.kind, alert.evidence[0]["notional"]) == (carol, AlertKind.LARGE_TRADE, "1000")
    assert alert.restriction.kind == TradingRestriction.Kind.USER_CANCEL_ONLY and alert.restriction.user == carol
    assert alert.restriction.source == "surveillance"
    audited = AuditLog.objects.get(action="RISK_RESTRICTION_SET")
    assert (audited.actor_system, audited.subject_user_id) == ("risk surveillance", carol.pk)


def test_spoofing_large_orders_cancelled_quickly_near_the_touch(live_market, traders, matcher):
    """Three orders worth 1000+ placed near the last price and cancelled unfilled within seconds
    raise a spoofing alert listing them; small orders, or large ones far from the price,
    cancelled the same way raise nothing."""
    alice, bob, carol = traders
    rule(live_market, AlertKind.SPOOFING, min_notional=D(1000), window_s=600, min_count=3, ratio=D("0.01"),
         max_lifetime_s=30)
    trade(matcher, carol, bob, price="100", quantity="0.1")  # the last price: 100

    def placed_and_cancelled(user, price, quantity):
        orders = [place(user, "BUY", price=price, quantity=quantity) for _ in range(3)]
        drain(matcher)
        for order in orders:
            order_cancel(user=user, order_id=order.pk)
        drain(matcher)
        return orders

    spoofs = placed_and_cancelled(alice, "99.5", "20")
    placed_and_cancelled(bob, "99.5", "0.05")  # small
    placed_and_cancelled(carol, "80", "20")  # far from the price
    consume()
    alert = RiskAlert.objects.get()
    assert (alert.user, alert.kind, alert.severity) == (alice, AlertKind.SPOOFING, "MEDIUM")
    assert sorted(item["order_id"] for item in alert.evidence) == sorted(order.pk for order in spoofs)


def test_a_cancelled_order_the_spoofing_rule_cannot_count_costs_no_query(live_market, traders,
                                                                         django_assert_num_queries):
    """Market makers cancel all day: an order below the rule's notional (or not a plain limit
    order) cannot be one of the orders an alert needs, so its cancel reads nothing."""
    alice = traders[0]
    rule(live_market, AlertKind.SPOOFING, min_notional=D(1000), window_s=600, min_count=3, ratio=D("0.01"),
         max_lifetime_s=30)
    surveillance.rule(AlertKind.SPOOFING, live_market.pk), surveillance.exempt(alice.pk, AlertKind.SPOOFING)  # cached
    cancelled = {"order_id": 1, "user_id": alice.pk, "market": live_market.symbol, "status": "CANCELED",
                 "filled_quantity": "0", "type": "LIMIT", "price": "99.5"}
    with django_assert_num_queries(0):
        surveillance.cancel_check({**cancelled, "quantity": "10.04"}, market_id=live_market.pk)  # 998.98
        surveillance.cancel_check({**cancelled, "quantity": "20", "type": "STOP_LIMIT"}, market_id=live_market.pk)
    with django_assert_num_queries(2):  # the last price, the user's recent cancels
        surveillance.cancel_check({**cancelled, "quantity": "10.06"}, market_id=live_market.pk)  # 1000.97


# ------------------------------------------------------------------ per window


def _age(trades, by: timedelta) -> None:
    Trade.objects.filter(pk__in=[t.pk for t in trades]).update(executed_at=timezone.now() - by)


def test_velocity_against_the_users_own_baseline(live_market, traders, matcher):
    """alice usually trades 100 a day; 2000 in the last hour is over 5x her hourly average and
    over the 1000 floor: an alert. carol usually trades much more, so the same 2000 is normal
    for her; nothing. bob trades only with alice, above his (empty) baseline too."""
    alice, bob, carol = traders
    dave = UserFactory(username="dave")
    fund(dave, live_market, {"USDT": D(1_000_000), "BTC": D(1000)})
    rule(live_market, AlertKind.VELOCITY, min_notional=D(1000), window_s=3600, ratio=D(5), min_count=10_000)
    trade(matcher, alice, dave, quantity="1")
    _age(Trade.objects.all(), timedelta(days=2))
    trade(matcher, carol, dave, quantity="900")
    _age(Trade.objects.filter(taker_user=carol), timedelta(days=3))
    dave_before = set(Trade.objects.values_list("pk", flat=True))
    trade(matcher, alice, bob, quantity="20")
    trade(matcher, carol, bob, price="100", quantity="20")
    assert Trade.objects.exclude(pk__in=dave_before).count() == 2
    run_task(risk_surveillance_windows)
    flagged = {alert.user.username: alert for alert in RiskAlert.objects.filter(kind=AlertKind.VELOCITY)}
    assert set(flagged) == {"alice", "bob"}, "carol's volume is normal for her; dave did not trade this hour"
    assert flagged["alice"].evidence[0]["volume"] == "2000"
    run_task(risk_surveillance_windows)
    assert RiskAlert.objects.get(user=alice).occurrences == 1, "one addition per window, not per run"


def test_concentration_of_a_markets_volume(live_market, traders, matcher):
    """Eight users trading evenly in pairs hold 25% each: nothing. Then alice and bob trade as
    much again between them: each holds over 30% of the window's volume and is flagged."""
    users = [UserFactory(username=f"u{i}") for i in range(8)]
    for user in users:
        fund(user, live_market)
    rule(live_market, AlertKind.CONCENTRATION, min_notional=D(1000), window_s=3600, min_count=10, ratio=D("0.30"))
    for buyer, seller in zip(users[::2], users[1::2]):
        for _ in range(3):
            trade(matcher, buyer, seller, quantity="1")
    run_task(risk_surveillance_windows)
    assert not RiskAlert.objects.exists()
    alice, bob = traders[:2]
    for _ in range(6):
        trade(matcher, alice, bob, quantity="1")
    run_task(risk_surveillance_windows)
    assert sorted(alerts(AlertKind.CONCENTRATION)) == [("alice", "MEDIUM", None), ("bob", "MEDIUM", None)]
    assert RiskAlert.objects.filter(user=alice).get().evidence[0]["share"] == "0.3333"
    run_task(risk_surveillance_windows)
    assert [alert.occurrences for alert in RiskAlert.objects.order_by("user__username")] == [1, 1], \
        "one addition per window, not per run"


def test_adding_to_an_alert_keeps_the_latest_evidence_and_the_highest_severity(live_market, traders):
    """An unresolved alert takes every occurrence: its count, the latest EVIDENCE_KEPT items in
    the order they came, the last summary, a severity raised but never lowered. A resolved one
    takes nothing more: the next occurrence opens a new alert (with and without a market)."""
    from risk.services import EVIDENCE_KEPT, alert_raise, alert_resolve

    alice = traders[0]
    severities = ["LOW"] * 30 + ["MEDIUM"] + ["LOW"] * 40 + ["HIGH"] + ["MEDIUM"] * 33
    for market_id in (live_market.pk, None):
        created = []
        for n, severity in enumerate(severities):
            alert, new = alert_raise(kind=AlertKind.VELOCITY, severity=severity, user_id=alice.pk,
                                     market_id=market_id, summary=f"occurrence {n}", evidence=[{"n": n}, {"n": -n}])
            created.append(new)
        assert created == [True] + [False] * (len(severities) - 1)
        stored = RiskAlert.objects.get(pk=alert.pk)
        assert stored.market_id == market_id and stored.occurrences == len(severities)
        assert (stored.severity, stored.summary) == ("HIGH", f"occurrence {len(severities) - 1}")
        assert len(stored.evidence) == EVIDENCE_KEPT
        expected = [item for n in range(len(severities)) for item in ({"n": n}, {"n": -n})][-EVIDENCE_KEPT:]
        assert stored.evidence == expected
        assert (alert.pk, alert.occurrences, alert.severity) == (stored.pk, stored.occurrences, "HIGH")

        alert_resolve(alert=stored, note="checked", actor=None)
        again, new = alert_raise(kind=AlertKind.VELOCITY, severity="LOW", user_id=alice.pk, market_id=market_id,
                                 summary="after", evidence=[{"n": "after"}])
        assert new and again.pk != stored.pk
        assert RiskAlert.objects.get(pk=stored.pk).occurrences == len(severities)
        alert_resolve(alert=again, note="checked", actor=None)
