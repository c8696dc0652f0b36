"""The risk back office: limits edited per scope, kill switches with a reason, the alert queue
worked through, a trader's page; operators act, compliance only reads."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

from exchange.models import Market
from exchange.roles import COMPLIANCE, OPERATORS
from risk.models import AlertKind, RiskAlert, RiskLimit, Scope, TradingRestriction
from risk.services import alert_raise, restriction_set, risk_limit_set
from tests.risk.conftest import drain

pytestmark = pytest.mark.django_db(transaction=True)

PAGES = ["/admin/risk/risklimit/", "/admin/risk/tradingrestriction/", "/admin/risk/riskalert/",
         "/admin/risk/trader/", "/admin/risk/marketswitch/", "/admin/risk/surveillancerule/",
         "/admin/risk/accountlink/", "/admin/risk/surveillanceexemption/", "/admin/risk/risklimit/add/",
         "/admin/risk/tradingrestriction/halt-all/"]


def action(client, url: str, name: str, ids: list, reason: str | None = None):
    """Run an admin action; with ``reason``, confirm its intermediate page."""
    data = {"action": name, ACTION_CHECKBOX_NAME: ids}
    if reason is not None:
        data.update(confirm="yes", reason=reason)
    return client.post(url, data)


def test_operators_use_every_page_and_compliance_only_reads(client, staff, live_market, traders):
    """Every risk page answers an operator; compliance reads the lists but cannot add, act or
    reach the exchange switch."""
    staff(OPERATORS)
    for page in PAGES:
        assert client.get(page).status_code == 200, page
    client.logout()
    staff(COMPLIANCE)
    for page in PAGES[:8]:
        assert client.get(page).status_code == 200, page
    assert client.get("/admin/risk/risklimit/add/").status_code == 403
    assert client.get("/admin/risk/tradingrestriction/halt-all/").status_code == 403
    action(client, "/admin/risk/trader/", "freeze", [traders[0].pk], reason="not allowed")
    assert not TradingRestriction.objects.exists()


def test_limits_are_edited_per_scope_through_the_service(client, staff, live_market, traders):
    """Adding a market-scoped limit, editing it, emptying it deletes the scope's row."""
    operator = staff(OPERATORS)
    response = client.post("/admin/risk/risklimit/add/", {"scope": "MARKET", "market": live_market.pk,
                                                          "max_open_orders": "5", "max_order_notional": "1000"})
    assert response.status_code == 302, response.content
    row = RiskLimit.objects.get()
    assert (row.scope, row.market, row.max_open_orders, row.max_order_notional, row.updated_by) == (
        "MARKET", live_market, 5, D(1000), operator)
    client.post(f"/admin/risk/risklimit/{row.pk}/change/", {"max_open_orders": "6", "max_order_notional": ""})
    row.refresh_from_db()
    assert (row.max_open_orders, row.max_order_notional) == (6, None)
    client.post(f"/admin/risk/risklimit/{row.pk}/change/", {"max_open_orders": ""})
    assert not RiskLimit.objects.exists()
    bad = client.post("/admin/risk/risklimit/add/", {"scope": "USER", "market": live_market.pk, "max_open_orders": "1"})
    assert bad.status_code == 200 and not RiskLimit.objects.exists()


def test_one_click_kill_switches_ask_for_a_reason(client, staff, live_market, traders, matcher):
    """Freeze and cancel-only on a trader, halt and resume on a market, halt and resume the whole
    exchange: each first asks for a reason, then records it with the operator."""
    operator = staff(OPERATORS)
    alice, bob = traders[:2]
    ask = action(client, "/admin/risk/trader/", "freeze", [alice.pk])
    assert ask.status_code == 200 and b"reason" in ask.content and not TradingRestriction.objects.exists()
    action(client, "/admin/risk/trader/", "freeze", [alice.pk], reason="chargebacks")
    action(client, "/admin/risk/trader/", "cancel_only", [bob.pk], reason="limits review")
    frozen = TradingRestriction.objects.get(user=alice)
    assert (frozen.kind, frozen.reason, frozen.created_by, frozen.source) == ("USER_FROZEN", "chargebacks", operator,
                                                                              "admin")
    action(client, "/admin/risk/trader/", "resume", [alice.pk, bob.pk], reason="cleared")
    assert not TradingRestriction.objects.filter(lifted_at__isnull=True).exists()

    action(client, "/admin/risk/marketswitch/", "halt", [live_market.pk], reason="feed outage")
    assert TradingRestriction.objects.filter(kind="MARKET_HALTED", lifted_at__isnull=True).count() == 1
    action(client, "/admin/risk/marketswitch/", "resume", [live_market.pk], reason="feed back")

    assert client.post("/admin/risk/tradingrestriction/halt-all/", {"reason": "exchange incident"}).status_code == 302
    assert TradingRestriction.objects.get(kind="EXCHANGE_HALTED").created_by == operator
    drain(matcher)
    assert Market.objects.get(pk=live_market.pk).status == "HALTED"
    client.post("/admin/risk/tradingrestriction/resume-all/", {"reason": "incident over"})
    assert not TradingRestriction.objects.filter(lifted_at__isnull=True).exists()
    drain(matcher)
    assert Market.objects.get(pk=live_market.pk).status == "TRADING"

    added = client.post("/admin/risk/tradingrestriction/add/", {"kind": "USER_FROZEN", "user": bob.pk,
                                                                 "reason": "from the add form"})
    assert added.status_code == 302, added.content
    assert TradingRestriction.objects.get(reason="from the add form").created_by == operator
    action(client, "/admin/risk/trader/", "resume", [bob.pk], reason="cleared again")
    restriction_set(kind="USER_CANCEL_ONLY", user=bob, reason="again")
    listing = client.get("/admin/risk/tradingrestriction/", {"lifted_at__isempty": "1"})
    assert b"again" in listing.content and b"chargebacks" not in listing.content
    action(client, "/admin/risk/tradingrestriction/", "lift", [TradingRestriction.objects.get(reason="again").pk],
           reason="all clear now")
    assert TradingRestriction.objects.get(reason="again").lifted_by == operator


def test_the_alert_queue_is_filtered_acknowledged_assigned_and_resolved(client, staff, live_market, traders):
    """Open alerts filter by status and kind; acknowledging takes an alert; resolving needs a note."""
    operator = staff(OPERATORS)
    alice, bob = traders[:2]
    wash, _ = alert_raise(kind=AlertKind.WASH_TRADE, severity="HIGH", user_id=alice.pk, market_id=live_market.pk,
                          summary="self-trade", evidence=[{"trade_id": 1}], counterparty_id=alice.pk)
    large, _ = alert_raise(kind=AlertKind.LARGE_TRADE, severity="LOW", user_id=bob.pk, market_id=live_market.pk,
                           summary="big one", evidence=[{"trade_id": 2}])
    page = client.get("/admin/risk/riskalert/", {"kind__exact": "WASH_TRADE", "status__exact": "OPEN"})
    assert b"self-trade" in page.content and b"big one" not in page.content
    assert b"trade_id" in client.get(f"/admin/risk/riskalert/{wash.pk}/change/").content

    action(client, "/admin/risk/riskalert/", "acknowledge", [wash.pk])
    wash.refresh_from_db()
    assert (wash.status, wash.assignee) == ("ACKNOWLEDGED", operator)
    action(client, "/admin/risk/riskalert/", "assign_to_me", [large.pk])
    assert RiskAlert.objects.get(pk=large.pk).assignee == operator
    action(client, "/admin/risk/riskalert/", "resolve", [wash.pk], reason="market maker test account; linked")
    wash.refresh_from_db()
    assert (wash.status, wash.resolution_note, wash.resolved_by) == ("RESOLVED", "market maker test account; linked",
                                                                      operator)
    assert b"self-trade" not in client.get("/admin/risk/riskalert/", {"status__exact": "OPEN"}).content


def test_a_traders_page_shows_state_tier_limits_restrictions_and_alerts(client, staff, live_market, traders):
    """The trader page lists what applies to the user and lets the KYC tier be edited."""
    staff(OPERATORS)
    alice = traders[0]
    risk_limit_set(scope=Scope.USER, user=alice, values={"max_open_orders": 7})
    risk_limit_set(scope=Scope.GLOBAL, values={"max_daily_orders": 99})
    restriction_set(kind="USER_CANCEL_ONLY", user=alice, reason="under review")
    alert_raise(kind=AlertKind.SPOOFING, severity="MEDIUM", user_id=alice.pk, market_id=live_market.pk,
                summary="layering at the touch", evidence=[])
    page = client.get(f"/admin/risk/trader/{alice.pk}/change/")
    content = page.content.decode()
    assert page.status_code == 200
    for text in ("CANCEL_ONLY", "under review", "max_open_orders 7 (user)", "max_daily_orders 99 (global)",
                 "layering at the touch"):
        assert text in content, text
    data = {"profile-TOTAL_FORMS": "1", "profile-INITIAL_FORMS": "0", "profile-MIN_NUM_FORMS": "0",
            "profile-MAX_NUM_FORMS": "1", "profile-0-kyc_tier": "2", "profile-0-user": alice.pk,
            **{f"{prefix}-{key}": value for prefix in ("trading_restrictions", "risk_limits", "risk_alerts")
               for key, value in (("TOTAL_FORMS", "0"), ("INITIAL_FORMS", "0"), ("MIN_NUM_FORMS", "0"),
                                  ("MAX_NUM_FORMS", "1000"))}}
    response = client.post(f"/admin/risk/trader/{alice.pk}/change/", data)
    assert response.status_code == 302, response.content
    alice.profile.refresh_from_db()
    assert alice.profile.kyc_tier == 2
