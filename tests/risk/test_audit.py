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
