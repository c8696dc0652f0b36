"""Risk metrics on /metrics: refusals by code, alerts by kind and severity, kill switches on."""

from __future__ import annotations

import pytest

from exchange.core.errors import ApplicationError
from risk.models import AlertKind, Scope
from risk.services import alert_raise, alert_resolve, restriction_set, risk_limit_set
from tests.risk.conftest import place

pytestmark = pytest.mark.django_db(transaction=True)


def test_metrics_count_refusals_alerts_and_switches(client, live_market, traders):
    """Two quantity refusals and an open-order refusal are counted by code; alerts by kind and
    severity (and those unresolved); active kill switches by kind."""
    alice, bob = traders[:2]
    risk_limit_set(scope=Scope.GLOBAL, values={"max_order_quantity": "1", "max_open_orders": 1})
    for quantity in ("2", "3"):
        with pytest.raises(ApplicationError):
            place(alice, price="100", quantity=quantity)
    place(alice, price="100", quantity="1")
    with pytest.raises(ApplicationError):
        place(alice, price="99", quantity="1")
    alert, _ = alert_raise(kind=AlertKind.WASH_TRADE, severity="HIGH", user_id=alice.pk, market_id=live_market.pk,
                           summary="s", evidence=[])
    alert_raise(kind=AlertKind.LARGE_TRADE, severity="LOW", user_id=bob.pk, market_id=live_market.pk, summary="l",
                evidence=[])
    alert_resolve(alert=alert, note="known test account", actor=None)
    restriction_set(kind="USER_FROZEN", user=bob, reason="r")

    text = client.get("/metrics").content.decode()
    for line in ('exchange_risk_rejects_total{code="RISK_MAX_ORDER_QUANTITY"} 2.0',
                 'exchange_risk_rejects_total{code="RISK_MAX_OPEN_ORDERS"} 1.0',
                 'exchange_risk_alerts_total{kind="WASH_TRADE",severity="HIGH"} 1.0',
                 'exchange_risk_alerts_total{kind="LARGE_TRADE",severity="LOW"} 1.0',
                 'exchange_risk_alerts_unresolved{kind="LARGE_TRADE",severity="LOW"} 1.0',
                 'exchange_risk_restrictions_active{kind="USER_FROZEN"} 1.0',
                 'exchange_risk_restrictions_active{kind="EXCHANGE_HALTED"} 0.0'):
        assert line in text, line
    assert 'exchange_risk_alerts_unresolved{kind="WASH_TRADE"' not in text
