"""Every back-office and compliance endpoint, tried with each role: exactly what exchange/roles.py promises.

For every page the admin site registers (a new page fails ``test_every_page_is_classified`` until it is
added to ``EXPECTED``), each role opens the list, the add page, an object's page, its delete page and its
history, and the actions offered on the list are compared with the expected ones. Then the compliance
exports (admin form and API), the dashboard and the enrollment page.

Roles: nobody signed in, a trader, Support, Operators, Compliance and a superuser; staff are signed in past
the second factor. Expectations are written out here, not derived from the permissions they test.
"""

from decimal import Decimal as D

import pytest
from django.contrib import admin
from rest_framework.test import APIClient

from exchange.apikeys.services import api_key_create
from exchange.audit.retention import legal_hold_set
from exchange.branding import Branding, branding_save
from exchange.demo import demo_load
from exchange.models import Asset, Market
from exchange.roles import COMPLIANCE, OPERATORS, SUPPORT, roles_sync
from matching.services import market_status_request
from tests.factories import UserFactory, login_staff
from wallet.models import FeeOverride, FeeTier, MoneyAction
from wallet.services import withdrawal_request
from wallet.services.four_eyes import money_action_request

pytestmark = pytest.mark.django_db

ANON, TRADER, SU = "anonymous", "trader", "superuser"
O, S, C = OPERATORS, SUPPORT, COMPLIANCE
ROLES = (ANON, TRADER, S, O, C, SU)
STAFF = {S, O, C, SU}
NOBODY: set = set()


def page(view, add=NOBODY, change=NOBODY, delete=NOBODY, actions=None):
    """Who may view the list and objects, add, change (an object's form is editable), delete; and the list's
    actions per role (``{action: roles}``)."""
    return {"view": set(view), "add": set(add), "change": set(change), "delete": set(delete),
            "actions": {name: set(roles) for name, roles in (actions or {}).items()}}


READ_ONLY = {O, C, SU}  # views that Operators and Compliance read, and nobody edits
EXPECTED = {
    "exchange.asset": page(READ_ONLY, add={O, SU}, change={O, SU}, delete={SU}, actions={"delete_selected": {SU}}),
    "exchange.market": page(READ_ONLY, add={O, SU}, change={O, SU}, delete={SU}, actions={
        "set_halted": {O, SU}, "set_trading": {O, SU}, "set_cancel_only": {O, SU}, "set_post_only": {O, SU},
        "delete_selected": {SU}}),
    "exchange.branding": page(READ_ONLY, add={O, SU}, change={O, SU}, delete={SU},
                              actions={"delete_selected": {SU}}),
    "exchange.apikey": page(READ_ONLY, actions={"revoke": {O, SU}}),
    "exchange.outboxevent": page(READ_ONLY, actions={"requeue": {O, SU}}),
    "exchange.auditlog": page(READ_ONLY),
    "exchange.auditcheckpoint": page(READ_ONLY),
    "exchange.legalhold": page(READ_ONLY, add={O, SU}, actions={"release_selected": {O, SU}}),
    "auth.user": page(STAFF, add={SU}, change={O, SU}, delete={SU}, actions={
        "deactivate_selected": {O, SU}, "reactivate_selected": {O, SU}, "cancel_orders_selected": {O, S, SU},
        "reset_two_factor_selected": {O, SU}, "delete_selected": {SU}}),
    "auth.group": page({C, SU}, add={SU}, change={SU}, delete={SU}, actions={"delete_selected": {SU}}),
    "axes.accessattempt": page(READ_ONLY, actions={"lift_selected": {O, SU}}),
    "orders.order": page(STAFF, actions={"cancel_selected": {O, S, SU}}),
    "orders.trade": page(STAFF),
    "orders.orderamendment": page(STAFF),
    "matching.marketstate": page(READ_ONLY),
    "matching.marketstatuschange": page(READ_ONLY),
    "wallet.account": page(READ_ONLY),
    "wallet.ledgertransaction": page(READ_ONLY),
    "wallet.ledgerentry": page(READ_ONLY),
    "wallet.hold": page(READ_ONLY),
    "wallet.deposit": page(READ_ONLY, add={O, SU}),
    "wallet.adjustment": page(READ_ONLY, add={O, SU}),
    "wallet.withdrawal": page(READ_ONLY, actions={"approve_selected": {O, SU}, "reject_selected": {O, SU},
                                                   "complete_selected": {O, SU}}),
    "wallet.moneyaction": page(READ_ONLY, actions={"approve_selected": {O, SU}, "reject_selected": {O, SU}}),
    "wallet.feetier": page(READ_ONLY, add={O, SU}, change={O, SU}, delete={O, SU},
                           actions={"delete_selected": {O, SU}}),
    "wallet.feeoverride": page(READ_ONLY, add={O, SU}, change={O, SU}, delete={O, SU},
                               actions={"delete_selected": {O, SU}}),
    # Risk (docs/RISK.md): Operators run it, Compliance reads it; limits are cleared by emptying them, kill
    # switches lifted by their action, alerts resolved by theirs.
    "risk.risklimit": page(READ_ONLY, add={O, SU}, change={O, SU}, delete={SU}, actions={"delete_selected": {SU}}),
    "risk.tradingrestriction": page(READ_ONLY, add={O, SU}, actions={"lift": {O, SU}}),
    "risk.marketswitch": page(READ_ONLY, change={O, SU}, actions={"halt": {O, SU}, "resume": {O, SU}}),
    "risk.riskalert": page(READ_ONLY, change={O, SU}, actions={"acknowledge": {O, SU}, "assign_to_me": {O, SU},
                                                               "resolve": {O, SU}}),
    "risk.surveillancerule": page(READ_ONLY, add={O, SU}, change={O, SU}, delete={SU},
                                  actions={"delete_selected": {SU}}),
    "risk.surveillanceexemption": page(READ_ONLY, add={O, SU}, change={O, SU}, delete={SU},
                                       actions={"delete_selected": {SU}}),
    "risk.accountlink": page(READ_ONLY, add={O, SU}, delete={SU}, actions={"delete_selected": {SU}}),
    "risk.trader": page(READ_ONLY, change={O, SU}, actions={"freeze": {O, SU}, "cancel_only": {O, SU},
                                                           "resume": {O, SU}}),
}
# Pages whose rows only the matchers or retention write: their lists are tried, no object page.
NO_OBJECT = {"orders.trade", "orders.orderamendment", "matching.marketstate", "exchange.auditcheckpoint"}


def expected(label: str) -> dict:
    return EXPECTED[label]


@pytest.fixture
def venue(settings, redis_app):
    """One row of (nearly) everything, made through the services (the order is accepted without a matcher
    running: it stays PENDING, which is all a page needs)."""
    settings.MONEY_FOUR_EYES_THRESHOLD_DEFAULT = D("1")
    settings.ORDERS_REQUIRE_LIVE_MATCHER = False
    demo_load(password="endpoint-matrix-pw-1")
    from django.contrib.auth import get_user_model

    users = {user.username: user for user in get_user_model().objects.all()}
    btc, market = Asset.objects.get(code="BTC"), Market.objects.get(symbol="BTC-USDT")
    branding_save(branding=Branding(operator_name="Acme Exchange", short_name="Acme", support_email="help@acme.example"))
    api_key_create(user=users["alice"], label="bot", permissions=["read"], ip_allowlist=[])
    legal_hold_set(user=users["bob"], reason="case 1", actor=users["operator"])
    market_status_request(market=market, new_status="HALTED", actor=users["operator"], reason="drill")
    withdrawal = withdrawal_request(user=users["alice"], asset=btc, amount=D("0.5"), address="bc1q")
    money_action_request(kind=MoneyAction.Kind.WITHDRAWAL_APPROVE, withdrawal=withdrawal, actor=users["operator"],
                         reason="KYC ok")
    money_action_request(kind=MoneyAction.Kind.BALANCE_ADJUST, actor=users["operator"], user=users["bob"], asset=btc,
                         amount=D("0.1"), reason="goodwill")
    FeeTier.objects.create(name="VIP 1", volume_30d_min=D("1000000"), maker_fee_rate=D("0.0008"),
                           taker_fee_rate=D("0.001"))
    FeeOverride.objects.create(user=users["bob"], maker_fee_rate=D("0"), taker_fee_rate=D("0.0005"), reason="mm")
    APIClient().post("/api/v1/auth/login", {"username": "alice", "password": "wrong"}, format="json")
    _order(users["alice"], market)
    _risk(users, market)
    return users


def _risk(users, market):
    from risk import services
    from risk.models import AlertKind, SurveillanceRule

    services.risk_limit_set(scope="GLOBAL", values={"max_open_orders": 500}, actor=users["operator"])
    services.restriction_set(kind="USER_CANCEL_ONLY", user=users["bob"], reason="review", actor=users["operator"])
    services.alert_raise(kind=AlertKind.LARGE_TRADE, severity="HIGH", user_id=users["alice"].pk,
                         market_id=market.pk, summary="large trade", evidence=[])
    services.account_link_create(user_a=users["alice"], user_b=users["bob"], reason="same firm",
                                 actor=users["operator"])
    SurveillanceRule.objects.create(kind=AlertKind.LARGE_TRADE, market=market)


def _order(user, market):
    from orders.rules import OrderRequest
    from orders.services import order_place

    order_place(user=user, symbol=market.symbol, request=OrderRequest(side="BUY", type="LIMIT", price=D("100"),
                                                                      quantity=D("0.1")))


def client_for(role: str, users: dict):
    from django.test import Client

    client = Client()
    if role == ANON:
        return client
    if role == TRADER:
        client.force_login(users["alice"])
        return client
    user = UserFactory(username=f"matrix-{role.lower()}", is_staff=True, is_superuser=role == SU)
    if role != SU:
        user.groups.add(roles_sync()[role])
    login_staff(client, user)
    return client


def object_of(model_admin, users):
    """An object of the page to open: a trader for the user page (staff accounts are superusers' only)."""
    if model_admin.model._meta.label_lower == "auth.user":
        return users["bob"]
    return model_admin.get_queryset(_Request(users["operator"])).order_by("pk").first()


class _Request:
    def __init__(self, user):
        self.user = user


def assert_status(response, allowed: bool, what: str):
    if allowed:
        assert response.status_code == 200, f"{what}: {response.status_code}"
    else:
        assert response.status_code in (302, 403), f"{what}: {response.status_code}"
        if response.status_code == 302:
            assert "/admin/login/" in response.url, f"{what}: redirected to {response.url}"


def test_every_page_is_classified():
    labels = {model._meta.label_lower for model in admin.site._registry}
    assert labels - set(EXPECTED) == set()
    assert "otp_totp.totpdevice" not in labels  # authenticator keys are never shown


@pytest.mark.parametrize("role", ROLES)
def test_each_admin_page_with_each_role(role, venue):
    client = client_for(role, venue)
    for model, model_admin in sorted(admin.site._registry.items(), key=lambda item: item[0]._meta.label_lower):
        opts = model._meta
        label, base = opts.label_lower, f"/admin/{opts.app_label}/{opts.model_name}/"
        rules = expected(label)
        may_view = role in rules["view"] | rules["change"]

        listing = client.get(base)
        assert_status(listing, may_view, f"{role} {label} list")
        if may_view:
            offered = {name for name, _ in listing.context["action_form"].fields["action"].choices if name} \
                if listing.context.get("action_form") else set()
            wanted = {name for name, roles in rules["actions"].items() if role in roles}
            assert offered == wanted, f"{role} {label} actions"
        assert_status(client.get(base + "add/"), role in rules["add"], f"{role} {label} add")
        if label in NO_OBJECT:
            continue
        obj = object_of(model_admin, venue)
        assert obj is not None, f"no {label} row to open"
        detail = client.get(f"{base}{obj.pk}/change/")
        assert_status(detail, may_view, f"{role} {label} object")
        if may_view:
            assert detail.context["has_change_permission"] == (role in rules["change"]), f"{role} {label} editable"
        assert_status(client.get(f"{base}{obj.pk}/history/"), may_view, f"{role} {label} history")
        assert_status(client.get(f"{base}{obj.pk}/delete/"), role in rules["delete"], f"{role} {label} delete")


@pytest.mark.parametrize("role", ROLES)
def test_the_dashboard_exports_and_enrollment_with_each_role(role, venue):
    """The index (dashboard) is for staff; the export form and API for Compliance alone; the enrollment page
    sends a verified staff member to the index."""
    client = client_for(role, venue)

    assert_status(client.get("/admin/"), role in STAFF, f"{role} index")
    assert_status(client.get("/admin/exchange/auditlog/export/"), role == C, f"{role} export form")
    enrollment = client.get("/admin/two-factor/")
    assert enrollment.status_code == 302
    assert enrollment.url == ("/admin/" if role in STAFF else "/admin/login/?next=/admin/two-factor/")

    api = APIClient()
    api.cookies = client.cookies
    for table in ("audit-logs", "orders", "trades", "ledger"):
        response = api.get(f"/api/v1/compliance/{table}", {"format": "jsonl"})
        want = {ANON: 401, TRADER: 403, C: 200}.get(role, 403)
        assert response.status_code == want, f"{role} {table}: {response.status_code}"
        if want == 403:
            assert response.json()["code"] == "COMPLIANCE_ONLY"
