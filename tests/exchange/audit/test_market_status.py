"""A market's status changes in its matcher; the database records each one in the audit
trail in the matcher's own transaction."""

from __future__ import annotations

import pytest

from exchange.audit.models import AuditLog
from exchange.audit.services import audit_system
from matching.services import market_status_request
from tests.matching.conftest import drain, market, matcher  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_matcher_applying_a_halt_and_a_resume_is_audited(matcher):  # noqa: F811
    """The request is MARKET_HALT (by whoever asked); the matcher's change is MARKET_STATUS_APPLIED
    by "matcher:<symbol>" with the status before and after and the engine sequence."""
    symbol = matcher.market.symbol
    halt = market_status_request(market=matcher.market, new_status="HALTED", actor=None, reason="incident 42",
                                 audit=audit_system("manage.py halt"))
    drain(matcher)
    resume = market_status_request(market=matcher.market, new_status="TRADING", actor=None, reason="resolved")
    drain(matcher)

    rows = list(AuditLog.objects.filter(market=symbol).order_by("id").values_list(
        "action", "object_id", "actor_system", "before", "after"))
    assert [row[:3] for row in rows] == [
        ("MARKET_HALT", str(halt.pk), "manage.py halt"),
        ("MARKET_STATUS_APPLIED", str(halt.pk), f"matcher:{symbol}"),
        ("MARKET_RESUME", str(resume.pk), rows[2][2]),
        ("MARKET_STATUS_APPLIED", str(resume.pk), f"matcher:{symbol}"),
    ]
    applied = rows[1]
    assert applied[3] == {"status": "TRADING"}
    assert applied[4]["status"] == "HALTED" and applied[4]["outcome"] == "APPLIED"
    assert isinstance(applied[4]["sequence"], int)
    assert rows[3][3:] == ({"status": "HALTED"}, {**rows[3][4], "status": "TRADING"})
