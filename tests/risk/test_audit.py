"""Every risk limit and kill-switch change writes its audit row in the change's transaction:
the action, the object, the actor (staff in the back office, the command, the surveillance
rule), the address, the user concerned and the terms before and after."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import call_command

from exchange.audit.models import AuditLog
from exchange.roles import OPERATORS
from risk.models import RiskLimit, TradingRestriction

pytestmark = pytest.mark.django_db(transaction=True)

RISK_ACTIONS = ("RISK_LIMIT_SET", "RISK_LIMIT_CLEAR", "RISK_RESTRICTION_SET", "RISK_RESTRICTION_LIFT")


def rows(*actions: str) -> list[AuditLog]:
    return list(AuditLog.objects.filter(action__in=actions or RISK_ACTIONS).order_by("id"))


def test_back_office_changes_are_audited_with_the_staff_member_and_address(client, staff, live_market, traders):
    """A user limit set then emptied, a freeze and its lift, each from the back office: one row
    each, with the operator, 127.0.0.1, the trader concerned and before/after."""
    operator = staff(OPERATORS)
    alice = traders[0]
    client.post("/admin/risk/risklimit/add/", {"scope": "USER", "user": alice.pk, "max_open_orders": "5"})
    limit = RiskLimit.objects.get()
    client.post(f"/admin/risk/risklimit/{limit.pk}/change/", {"max_open_orders": ""})
    client.post("/admin/risk/trader/", {"action": "freeze", ACTION_CHECKBOX_NAME: [alice.pk], "confirm": "yes",
                                        "reason": "chargebacks on the card"})
    client.post("/admin/risk/trader/", {"action": "resume", ACTION_CHECKBOX_NAME: [alice.pk], "confirm": "yes",
                                        "reason": "card issuer cleared it"})

    set_limit, cleared, frozen, lifted = rows()
    assert [row.action for row in (set_limit, cleared, frozen, lifted)] == list(RISK_ACTIONS)
    for row in (set_limit, cleared, frozen, lifted):
        assert (row.actor_staff_id, row.ip, row.subject_user_id) == (operator.pk, "127.0.0.1", alice.pk)
    assert (set_limit.object_type, set_limit.object_id) == ("risk.risklimit", str(limit.pk))
    assert set_limit.before is None and set_limit.after["max_open_orders"] == "5"
    assert cleared.before["max_open_orders"] == "5" and cleared.after is None
    restriction = TradingRestriction.objects.get()
    assert (frozen.object_type, frozen.object_id) == ("risk.tradingrestriction", str(restriction.pk))
    assert frozen.after["kind"] == "USER_FROZEN" and frozen.after["reason"] == "chargebacks on the card"
    assert lifted.before["lifted"] is False and lifted.after["lift_reason"] == "card issuer cleared it"


def test_commands_are_audited_as_the_command(live_market, traders):
    """kill_switch and risk_limit write their rows with the command as the actor; halting a
    market names the market."""
    call_command("risk_limit", "set", "--market", "BTC-USDT", "--max-order-quantity", "2", stdout=StringIO())
    call_command("kill_switch", "halt-market", "BTC-USDT", "--reason", "feed outage", stdout=StringIO())
    call_command("kill_switch", "resume-market", "BTC-USDT", "--reason", "feed back", stdout=StringIO())
    call_command("risk_limit", "clear", "--market", "BTC-USDT", stdout=StringIO())
    audited = rows()
    assert [(row.action, row.actor_system, row.market) for row in audited] == [
        ("RISK_LIMIT_SET", "manage.py risk_limit", "BTC-USDT"),
        ("RISK_RESTRICTION_SET", "manage.py kill_switch", "BTC-USDT"),
        ("RISK_RESTRICTION_LIFT", "manage.py kill_switch", "BTC-USDT"),
        ("RISK_LIMIT_CLEAR", "manage.py risk_limit", "BTC-USDT"),
    ]
    assert rows("MARKET_HALT")[0].actor_system == "manage.py kill_switch", "the halt request is audited too"


def test_a_refused_change_writes_no_audit_row(live_market, traders):
    """An invalid limit or a switch without a reason changes nothing and audits nothing."""
    from exchange.core.errors import ApplicationError
    from risk.services import restriction_set, risk_limit_set

    with pytest.raises(ApplicationError):
        risk_limit_set(scope="GLOBAL", values={"max_open_orders": "-3"})
    with pytest.raises(ApplicationError):
        restriction_set(kind="EXCHANGE_HALTED", reason=" ")
    assert rows() == []


def test_surveillance_configuration_edits_are_audited_and_reach_the_rule_cache(client, staff, live_market, traders):
    """A rule added then loosened, an exemption and an account link (its users given in
    either order), each from the back office: one row each, with the operator, the market
    or the user concerned, and what changed. The rule's edit reaches the processes' cache
    at once (the change token moves)."""
    from risk import surveillance
    from risk.models import AccountLink, SurveillanceExemption, SurveillanceRule

    operator = staff(OPERATORS)
    alice, bob = traders[0], traders[1]
    fields = {"kind": "WASH_TRADE", "market": live_market.pk, "enabled": "on", "auto_action": "NONE",
              "min_notional": "0", "window_s": "3600", "min_count": "1", "ratio": "0", "max_lifetime_s": "0"}
    client.post("/admin/risk/surveillancerule/add/", fields)
    rule = SurveillanceRule.objects.get(kind="WASH_TRADE", market=live_market)
    cached = surveillance._rules.get(None)
    client.post(f"/admin/risk/surveillancerule/{rule.pk}/change/", {**fields, "enabled": "", "min_count": "3"})
    client.post("/admin/risk/surveillanceexemption/add/", {"user": alice.pk, "kind": "WASH_TRADE",
                                                          "reason": "market maker under contract"})
    client.post("/admin/risk/accountlink/add/", {"user_a": bob.pk, "user_b": alice.pk, "reason": "same company"})

    created, updated = rows("SURVEILLANCE_RULE_CREATE", "SURVEILLANCE_RULE_UPDATE")
    assert (created.actor_staff_id, created.ip, created.market) == (operator.pk, "127.0.0.1", "BTC-USDT")
    assert created.before is None and created.after["min_count"] == 1
    assert (updated.before, updated.after) == ({"enabled": True, "min_count": 1}, {"enabled": False, "min_count": 3})
    assert surveillance._rules.get(None) is not cached, "the rule cache was dropped"
    exemption, = rows("SURVEILLANCE_EXEMPTION_CREATE")
    assert exemption.subject_user_id == alice.pk
    assert exemption.object_id == str(SurveillanceExemption.objects.get().pk)
    link, = rows("ACCOUNT_LINK_CREATE")
    stored = AccountLink.objects.get()
    assert (stored.user_a_id, stored.user_b_id) == tuple(sorted((alice.pk, bob.pk))), "given in either order"
    assert (link.object_id, link.after["user_a_id"], link.after["user_b_id"]) == (
        str(stored.pk), stored.user_a_id, stored.user_b_id)


def test_deleting_surveillance_settings_is_for_superusers_and_audited(client, staff, admin_client, live_market):
    from risk.models import SurveillanceRule

    rule = SurveillanceRule.objects.create(kind="WASH_TRADE", market=live_market, min_count=3)
    staff(OPERATORS)
    assert client.post(f"/admin/risk/surveillancerule/{rule.pk}/delete/", {"post": "yes"}).status_code == 403
    admin_client.post(f"/admin/risk/surveillancerule/{rule.pk}/delete/", {"post": "yes"})
    deleted, = rows("SURVEILLANCE_RULE_DELETE")
    assert deleted.before["min_count"] == 3 and deleted.after is None and deleted.market == "BTC-USDT"
    assert not SurveillanceRule.objects.filter(pk=rule.pk).exists()
