"""Bulk actions of the back office do what they say through the services, with the staff member in the audit
trail: cancel selected orders (Support too), halt markets, deactivate a user (their orders cancelled), reset a
lost authenticator."""

from decimal import Decimal as D

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django_otp.plugins.otp_totp.models import TOTPDevice

from exchange.audit.models import AuditLog
from exchange.roles import OPERATORS, SUPPORT
from matching.models import MarketStatusChange
from orders.models import Order
from orders.rules import OrderRequest
from orders.services import order_place
from tests.factories import UserFactory, login_staff

pytestmark = pytest.mark.django_db


@pytest.fixture
def open_orders(settings, redis_app, alice, market, fund):
    """Two of alice's orders, accepted (PENDING: no matcher runs in these tests)."""
    settings.ORDERS_REQUIRE_LIVE_MATCHER = False
    fund(alice, market.quote, "1000")
    return [order_place(user=alice, symbol=market.symbol,
                        request=OrderRequest(side="BUY", type="LIMIT", price=D(price), quantity=D("0.1")))[0]
            for price in ("100", "101")]


def test_support_cancels_selected_orders_as_themself(client, member, open_orders):
    support = member(SUPPORT, "sam")
    login_staff(client, support)

    response = client.post("/admin/orders/order/", {"action": "cancel_selected",
                                                    ACTION_CHECKBOX_NAME: [o.pk for o in open_orders]}, follow=True)

    assert b"Cancel requested for 2 open order(s)" in response.content
    assert all(order.cancel_requested_at for order in Order.objects.filter(pk__in=[o.pk for o in open_orders]))
    rows = AuditLog.objects.filter(action="CANCEL_ORDER")
    assert {row.actor_staff_id for row in rows} == {support.pk} and rows.count() == 2


def test_operators_halt_a_market_with_a_reason(client, member, market):
    olga = member(OPERATORS, "olga")
    login_staff(client, olga)

    ask = client.post("/admin/exchange/market/", {"action": "set_halted", ACTION_CHECKBOX_NAME: [market.pk]})
    assert ask.status_code == 200 and b"Halt trading" in ask.content
    client.post("/admin/exchange/market/", {"action": "set_halted", ACTION_CHECKBOX_NAME: [market.pk],
                                            "confirm": "yes", "reason": "exchange incident 7"})

    change = MarketStatusChange.objects.get()
    assert (change.new_status, change.requested_by, change.reason) == ("HALTED", olga, "exchange incident 7")
    assert AuditLog.objects.get(action="MARKET_HALT").actor_staff_id == olga.pk


def test_deactivating_a_user_cancels_their_orders_and_is_audited(client, member, alice, open_orders):
    olga = member(OPERATORS, "olga")
    login_staff(client, olga)

    response = client.post("/admin/auth/user/", {"action": "deactivate_selected", ACTION_CHECKBOX_NAME: [alice.pk],
                                                 "confirm": "yes", "reason": "account takeover reported"},
                           follow=True)

    alice.refresh_from_db()
    assert not alice.is_active
    assert b"2 open order(s) cancelled" in response.content
    row = AuditLog.objects.get(action="USER_DEACTIVATE")
    assert (row.actor_staff_id, row.subject_user_id, row.after["reason"]) == \
        (olga.pk, alice.pk, "account takeover reported")
    assert AuditLog.objects.filter(action="CANCEL_ORDER", actor_staff_id=olga.pk).count() == 2


def test_staff_accounts_are_a_superusers_business(client, member):
    """An operator cannot deactivate a colleague nor themself; the error is shown, nothing changes."""
    olga, oscar = member(OPERATORS, "olga"), member(OPERATORS, "oscar")
    login_staff(client, olga)

    response = client.post("/admin/auth/user/", {"action": "deactivate_selected",
                                                 ACTION_CHECKBOX_NAME: [oscar.pk, olga.pk], "confirm": "yes",
                                                 "reason": "testing limits"}, follow=True)

    assert b"Only a superuser" in response.content and b"their own account" in response.content
    oscar.refresh_from_db()
    olga.refresh_from_db()
    assert oscar.is_active and olga.is_active


def test_an_operator_resets_a_traders_lost_authenticator(client, member):
    olga = member(OPERATORS, "olga")
    tom = UserFactory(username="tom")
    TOTPDevice.objects.create(user=tom, name="authenticator", confirmed=True)
    login_staff(client, olga)

    client.post("/admin/auth/user/", {"action": "reset_two_factor_selected", ACTION_CHECKBOX_NAME: [tom.pk],
                                      "confirm": "yes", "reason": "lost phone, identity checked"})

    assert not TOTPDevice.objects.filter(user=tom).exists()
    row = AuditLog.objects.get(action="TOTP_DISABLE")
    assert (row.actor_staff_id, row.subject_user_id, row.after) == \
        (olga.pk, tom.pk, {"reason": "lost phone, identity checked"})
