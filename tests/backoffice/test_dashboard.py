"""The operators' dashboard (the back office's index) and the amounts of the back office's lists, against real
trades from a real matcher: panels show what happened, to whom may see it, amounts at their precision."""

from decimal import Decimal as D

import pytest

from exchange.backoffice.dashboard import dashboard_context, risk_alert_model
from exchange.roles import COMPLIANCE, OPERATORS, SUPPORT, roles_sync
from tests.factories import UserFactory, login_staff
from tests.matching.conftest import drain, market, matcher, place, traders  # noqa: F401  (fixtures and helpers)
from wallet.models import MoneyAction
from wallet.services import withdrawal_request
from wallet.services.four_eyes import money_action_request

pytestmark = pytest.mark.django_db(transaction=True)


def staff_member(role: str, username: str):
    user = UserFactory(username=username, is_staff=True)
    user.groups.add(roles_sync()[role])
    return user


@pytest.fixture
def trading_day(settings, market, traders, matcher):
    """Two trades at 2996.39 on BTC-USDT, a resting order, a withdrawal to review and a request waiting for
    a second operator."""
    from django.core.cache import cache

    settings.MONEY_FOUR_EYES_THRESHOLD_DEFAULT = D("0")
    cache.delete("backoffice:orders_by_status")  # the dashboard keeps the counts for 30 s, across tests too
    alice, bob, _ = traders
    place(alice, "SELL", price="2996.39", quantity="0.5")
    place(bob, "BUY", price="2996.39", quantity="0.3")
    place(bob, "BUY", price="2996.39", quantity="0.2")
    place(bob, "BUY", price="2990.01", quantity="1.2345")
    drain(matcher)
    withdrawal_request(user=alice, asset=market.base, amount=D("0.25"), address="bc1qexample")
    operator = staff_member(OPERATORS, "olga")
    money_action_request(kind=MoneyAction.Kind.BALANCE_ADJUST, actor=operator, user=bob, asset=market.quote,
                         amount=D("10"), reason="goodwill")
    return operator


def test_the_operator_sees_the_venue_at_a_glance(client, trading_day):
    login_staff(client, trading_day)

    page = client.get("/admin/")

    html = page.content.decode()
    panels = page.context["dashboard"]
    [btc_usdt] = panels["markets"]
    assert (btc_usdt["symbol"], btc_usdt["status"], btc_usdt["alive"], btc_usdt["last_price"]) == \
        ("BTC-USDT", "TRADING", True, "2996.39")
    [activity] = panels["activity"]
    assert (activity["volume"], activity["trades"]) == ("1498.19500000 USDT", 2)
    assert html.count('<svg class="bo-chart"') == 2 and "1498.19500000 USDT</title>" in html
    statuses = dict(panels["orders_by_status"])
    assert (statuses["FILLED"], statuses["NEW"]) == (3, 1)
    assert panels["money"]["withdrawals"] == [{"asset": "BTC", "count": 1, "total": "0.25000000"}]
    assert panels["money"]["approvals_pending"] == 1
    assert set(panels["outbox"]) >= {"pending", "failed", "oldest_s"}
    for testid in ("panel-markets", "panel-money", "panel-outbox", "panel-orders", "panel-activity"):
        assert f'data-testid="{testid}"' in html


def test_open_risk_alerts_are_counted_by_severity(client, trading_day, market, traders):
    """Unresolved alerts (open or acknowledged) per severity, with a link to the alert queue; resolved ones
    are not counted."""
    from risk.models import AlertKind
    from risk.services import alert_raise, alert_resolve

    assert risk_alert_model() is not None
    for kind, severity in ((AlertKind.LARGE_TRADE, "HIGH"), (AlertKind.SPOOFING, "HIGH"),
                           (AlertKind.VELOCITY, "LOW")):
        alert_raise(kind=kind, severity=severity, user_id=traders[0].pk, market_id=market.pk, summary="x",
                    evidence=[])
    resolved, _ = alert_raise(kind=AlertKind.CONCENTRATION, severity="LOW", user_id=traders[1].pk,
                              market_id=market.pk, summary="y", evidence=[])
    alert_resolve(alert=resolved, note="market maker, expected", actor=trading_day)
    login_staff(client, trading_day)

    panel = client.get("/admin/").context["dashboard"]["risk_alerts"]

    assert dict(panel["by_severity"]) == {"HIGH": 2, "LOW": 1}
    assert panel["url"] == "/admin/risk/riskalert/"


def test_each_role_sees_the_panels_it_may(rf, trading_day):
    """Support sees orders and trading activity only; Compliance every panel; a matcher that stops beating
    shows as down."""
    from matching import stream

    support, compliance = staff_member(SUPPORT, "sam"), staff_member(COMPLIANCE, "carla")

    def panels(user):
        request = rf.get("/admin/")
        request.user = user
        return dashboard_context(request)["dashboard"]

    assert set(panels(support)) == {"activity", "orders_by_status"}
    assert set(panels(compliance)) >= {"markets", "activity", "orders_by_status", "outbox", "money"}
    stream.get_redis().delete(stream.heartbeat_key("BTC-USDT"))
    assert panels(compliance)["markets"][0]["alive"] is False


def test_lists_show_amounts_at_the_markets_and_assets_precision(client, trading_day):
    """The order list reads 2996.39 and 1.2345, not 2996.390000000000000000; balances at the asset's places."""
    login_staff(client, trading_day)

    orders = client.get("/admin/orders/order/").content.decode()
    trades = client.get("/admin/orders/trade/").content.decode()
    accounts = client.get("/admin/wallet/account/").content.decode()

    assert ">2996.39<" in orders and ">1.2345<" in orders and "2996.3900" not in orders
    assert ">2996.39<" in trades and ">898.91700000<" in trades
    assert "000000000000" not in orders + trades + accounts
