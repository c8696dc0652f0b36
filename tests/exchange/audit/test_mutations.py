"""Every audited mutation, through the door people use (API, back office, command), writes
its row with the actor, the client's address and user agent, and the state before and after."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from exchange.apikeys.models import ApiKey
from exchange.audit.models import AuditLog
from exchange.audit.services import current_process
from exchange.branding import Branding
from exchange.models import Asset, Market
from exchange.roles import OPERATORS, SUPPORT
from tests.factories import UserFactory, api_key_for
from tests.wallet.conftest import alice, bob, btc, fund, market, operator, usdt  # noqa: F401  (fixtures)
from wallet.models import FeeOverride, FeeTier
from wallet.services import withdrawal_approve, withdrawal_request

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def one_staff_member_suffices(settings):
    """Money actions here stay under the four-eyes threshold: they run at once, from one request
    (the second staff member's rows: tests/backoffice/test_four_eyes.py)."""
    settings.MONEY_FOUR_EYES_THRESHOLD_DEFAULT = D("1000")

IP = "203.0.113.7"
AGENT = "audit-test/1.0"
FROM = {"REMOTE_ADDR": IP, "HTTP_USER_AGENT": AGENT}
User = get_user_model()


def last(action: str) -> AuditLog:
    row = AuditLog.objects.filter(action=action).order_by("-id").first()
    assert row is not None, f"no {action} row"
    return row


def assert_from_request(row: AuditLog, *, staff=None, user=None, api_key=None):
    """The row names who acted (a staff member or a user with their key), where from, and the request id."""
    assert (row.actor_staff_id, row.actor_user_id, row.actor_api_key_id) == (
        getattr(staff, "pk", None), getattr(user, "pk", None), getattr(api_key, "pk", None))
    assert (row.ip, row.user_agent) == (IP, AGENT)
    assert len(row.request_id) == 32


@pytest.fixture
def api(alice):  # noqa: F811
    client = APIClient()
    client.force_login(alice)
    return client


# -- users, sessions, passwords ------------------------------------------------------------


def test_register_login_failed_login_and_logout_are_recorded():
    """Registration, a wrong password, a sign-in and a sign-out each write their row about the user."""
    client = APIClient()
    client.post("/api/v1/auth/register", {"username": "dora", "email": "dora@example.com",
                                          "password": "a-long-unusual-passphrase"}, format="json", **FROM)
    dora = User.objects.get(username="dora")
    client.post("/api/v1/auth/logout", **FROM)
    client.post("/api/v1/auth/login", {"username": "Dora", "password": "wrong-password"}, format="json", **FROM)
    client.post("/api/v1/auth/login", {"username": "dora", "password": "a-long-unusual-passphrase"},
                format="json", **FROM)

    registered = last("USER_REGISTER")
    assert registered.after == {"username": "dora", "email": "dora@example.com"}
    assert_from_request(registered, user=dora)
    failed = last("LOGIN_FAILED")
    assert (failed.actor_system, failed.subject_user_id, failed.after) == ("anonymous", dora.pk, {"username": "Dora"})
    assert (failed.ip, failed.user_agent) == (IP, AGENT)
    assert_from_request(last("LOGIN"), user=dora)
    assert_from_request(last("LOGOUT"), user=dora)


def test_a_password_changed_in_the_back_office_is_recorded_without_the_password(client, staff):
    """The admin's password form writes PASSWORD_CHANGE by the operator about the user; no hash is kept."""
    operator = staff(OPERATORS)
    operator.is_superuser = True
    operator.save()
    target = UserFactory(username="carol")

    response = client.post(f"/admin/auth/user/{target.pk}/password/",
                           {"password1": "another-long-passphrase", "password2": "another-long-passphrase",
                            "usable_password": "true"}, **FROM)

    assert response.status_code == 302
    row = last("PASSWORD_CHANGE")
    assert row.subject_user_id == target.pk and row.after == {"usable": True}
    assert_from_request(row, staff=operator)
    assert "passphrase" not in str(AuditLog.objects.values_list("before", "after"))


def test_user_edits_split_roles_from_details(client, staff):
    """Adding a user to a role is ROLE_CHANGE; changing their e-mail is USER_UPDATE; both with before/after."""
    operator = staff(OPERATORS)
    operator.is_superuser = True
    operator.save()
    carol = UserFactory(username="carol", email="carol@old.example")
    support = Group.objects.get(name=SUPPORT)
    form = {"username": "carol", "email": "carol@new.example", "is_active": "on", "groups": [support.pk],
            "date_joined_0": "2026-01-01", "date_joined_1": "00:00:00"}

    response = client.post(f"/admin/auth/user/{carol.pk}/change/", form, **FROM)

    assert response.status_code == 302, response.content[:2000]
    role = last("ROLE_CHANGE")
    assert (role.before, role.after) == ({"groups": []}, {"groups": [SUPPORT]})
    assert role.subject_user_id == carol.pk
    assert_from_request(role, staff=operator)
    details = last("USER_UPDATE")
    assert details.before["email"] == "carol@old.example" and details.after["email"] == "carol@new.example"


def test_a_roles_permissions_edit_is_a_role_change(client, staff):
    operator = staff(OPERATORS)
    operator.is_superuser = True
    operator.save()
    group = Group.objects.create(name="Auditors")

    client.post(f"/admin/auth/group/{group.pk}/change/", {"name": "Auditors", "permissions": []}, **FROM)
    client.post(f"/admin/auth/group/{group.pk}/change/", {"name": "External auditors", "permissions": []}, **FROM)

    row = last("ROLE_CHANGE")
    assert (row.before, row.after) == ({"name": "Auditors"}, {"name": "External auditors"})
    assert AuditLog.objects.filter(action="ROLE_CHANGE", object_id=str(group.pk)).count() == 1  # no-op saves: none


# -- API keys ------------------------------------------------------------------------------


def test_api_keys_created_and_revoked_by_their_owner(api, alice):  # noqa: F811
    """The owner's create and revoke are recorded with the owner as actor; the secret never is."""
    created = api.post("/api/v1/api-keys", {"label": "bot", "permissions": ["read", "trade"]}, format="json", **FROM)
    key = ApiKey.objects.get(key_id=created.json()["key_id"])
    api.delete(f"/api/v1/api-keys/{key.key_id}", **FROM)
    api.delete(f"/api/v1/api-keys/{key.key_id}", **FROM)  # idempotent: nothing more to record

    row = last("API_KEY_CREATE")
    assert row.after["permissions"] == ["read", "trade"] and row.object_id == str(key.pk)
    assert created.json()["secret"] not in str(row.after)
    assert_from_request(row, user=alice)
    revoke = last("API_KEY_REVOKE")
    assert revoke.before["revoked_at"] is None and revoke.after["revoked_at"] is not None
    assert_from_request(revoke, user=alice)
    assert AuditLog.objects.filter(action="API_KEY_REVOKE").count() == 1


def test_api_keys_revoked_in_the_back_office(client, staff, alice):  # noqa: F811
    operator = staff(OPERATORS)
    first, _ = api_key_for(alice, label="one")
    second, _ = api_key_for(alice, label="two")

    client.post("/admin/exchange/apikey/", {"action": "revoke", ACTION_CHECKBOX_NAME: [first.pk, second.pk]}, **FROM)

    rows = AuditLog.objects.filter(action="API_KEY_REVOKE").order_by("object_id")
    assert [row.object_id for row in rows] == [str(first.pk), str(second.pk)]
    for row in rows:
        assert row.subject_user_id == alice.pk
        assert_from_request(row, staff=operator)


def test_reencrypting_api_key_secrets_from_the_command_line():
    """A command's rows name the command as the actor."""
    api_key_for()

    call_command("api_keys_reencrypt", stdout=None)

    row = last("API_KEYS_REENCRYPT")
    assert (row.actor_system, row.after) == ("manage.py api_keys_reencrypt", {"reencrypted": 1})


# -- money ---------------------------------------------------------------------------------


def test_deposit_credited_in_the_back_office(client, staff, alice, btc):  # noqa: F811
    operator = staff(OPERATORS)

    client.post("/admin/wallet/deposit/add/", {"user": alice.pk, "asset": btc.pk, "amount": "1.25", "txid": "w-1",
                                                "reason": "bank wire"}, **FROM)

    row = last("DEPOSIT_CREDIT")
    assert row.before == {"available": "0"}
    assert row.after == {"available": "1.25", "asset": "BTC", "amount": "1.25", "txid": "w-1", "source": "OPERATOR",
                         "memo": "bank wire"}
    assert row.subject_user_id == alice.pk
    assert_from_request(row, staff=operator)


def test_deposit_credited_by_the_custody_webhook(client, alice, btc, settings):  # noqa: F811
    import json
    import time

    from wallet.custody import custody_signature

    settings.CUSTODY_WEBHOOK_SECRET = "custody-secret-for-tests-0123456789"
    body = json.dumps({"user_id": alice.pk, "asset": "BTC", "amount": "0.5", "txid": "0xfeed", "memo": ""}).encode()
    stamp = str(int(time.time()))
    client.generic("POST", "/api/v1/custody/deposits", body, content_type="application/json",
                   HTTP_X_CUSTODY_TIMESTAMP=stamp,
                   HTTP_X_CUSTODY_SIGNATURE=custody_signature(secret=settings.CUSTODY_WEBHOOK_SECRET, timestamp=stamp,
                                                              body=body), **FROM)

    row = last("DEPOSIT_CREDIT")
    assert (row.actor_system, row.subject_user_id, row.ip) == ("custody-webhook", alice.pk, IP)
    assert (row.before, row.after["available"]) == ({"available": "0"}, "0.5")


def test_balance_adjusted_in_the_back_office(client, staff, alice, btc, fund):  # noqa: F811
    fund(alice, btc, "2")
    operator = staff(OPERATORS)

    client.post("/admin/wallet/adjustment/add/", {"user": alice.pk, "asset": btc.pk, "amount": "-0.5",
                                                   "reason": "chargeback 7"}, **FROM)

    row = last("BALANCE_ADJUST")
    assert (row.before, row.after) == ({"available": "2"}, {"available": "1.5", "asset": "BTC", "amount": "-0.5",
                                                            "reason": "chargeback 7"})
    assert_from_request(row, staff=operator)


def test_withdrawal_requested_approved_rejected_and_completed(client, staff, api, alice, btc, fund):  # noqa: F811
    """The user's request through the API, then each operator decision in the back office."""
    fund(alice, btc, "3")
    api.post("/api/v1/withdrawals", {"asset": "BTC", "amount": "1", "address": "bc1qfirst",
                                     "password": "correct-horse-battery"}, format="json", **FROM)
    requested = last("WITHDRAWAL_REQUEST")
    assert requested.after["status"] == "REQUESTED" and requested.after["amount"] == "1"
    assert_from_request(requested, user=alice)
    second = withdrawal_request(user=alice, asset=btc, amount=D("1"), address="bc1qsecond")
    operator = staff(OPERATORS)

    first_id = int(requested.object_id)
    client.post("/admin/wallet/withdrawal/", {"action": "approve_selected", ACTION_CHECKBOX_NAME: [first_id],
                                              "apply": "1", "reason": "KYC ok"}, **FROM)
    client.post("/admin/wallet/withdrawal/", {"action": "reject_selected", ACTION_CHECKBOX_NAME: [second.pk],
                                              "apply": "1", "reason": "sanctioned"}, **FROM)
    client.post("/admin/wallet/withdrawal/?status=APPROVED", {"action": "complete_selected",
                                                              ACTION_CHECKBOX_NAME: [first_id], "apply": "1",
                                                              "reason": "sent", "txid": "0xout"}, **FROM)

    for action, before, after in (("WITHDRAWAL_APPROVE", "REQUESTED", "APPROVED"),
                                  ("WITHDRAWAL_REJECT", "REQUESTED", "REJECTED"),
                                  ("WITHDRAWAL_COMPLETE", "APPROVED", "COMPLETED")):
        row = last(action)
        assert (row.before["status"], row.after["status"], row.subject_user_id) == (before, after, alice.pk), action
        assert_from_request(row, staff=operator)
    assert last("WITHDRAWAL_COMPLETE").after["txid"] == "0xout"


def test_a_service_called_without_a_request_names_its_actor(alice, btc, fund, operator):  # noqa: F811
    """Called from code (a command, a task), the row names the operator the service was given."""
    fund(alice, btc, "1")
    withdrawal = withdrawal_request(user=alice, asset=btc, amount=D("1"), address="bc1q")

    withdrawal_approve(withdrawal=withdrawal, actor=operator, reason="batch review")

    row = last("WITHDRAWAL_APPROVE")
    assert (row.actor_staff_id, row.ip, row.user_agent) == (operator.pk, None, "")
    assert last("WITHDRAWAL_REQUEST").actor_user_id == alice.pk


# -- venue configuration -----------------------------------------------------------------------


@pytest.fixture
def superuser(client, staff):
    operator = staff(OPERATORS)
    operator.is_superuser = True
    operator.save()
    return operator


def test_assets_listed_and_edited(client, superuser):
    client.post("/admin/exchange/asset/add/", {"code": "SOL", "name": "Solana", "precision": "9"}, **FROM)
    sol = Asset.objects.get(code="SOL")
    client.post(f"/admin/exchange/asset/{sol.pk}/change/", {"name": "Solana (SPL)"}, **FROM)

    created = last("ASSET_CREATE")
    assert (created.after["code"], created.after["precision"], created.before) == ("SOL", 9, None)
    assert_from_request(created, staff=superuser)
    updated = last("ASSET_UPDATE")
    assert (updated.before, updated.after) == ({"name": "Solana"}, {"name": "Solana (SPL)"})


def test_markets_listed_edited_and_halted(client, superuser, btc, usdt):  # noqa: F811
    form = {"symbol": "BTC-USDT", "base": btc.pk, "quote": usdt.pk, "tick_size": "0.01", "step_size": "0.0001",
            "min_quantity": "0.0001", "max_quantity": "100", "min_notional": "5", "maker_fee_rate": "0.001",
            "taker_fee_rate": "0.002", "price_band": "0.1", "stp_default": "EXPIRE_TAKER"}
    client.post("/admin/exchange/market/add/", form, **FROM)
    market = Market.objects.get(symbol="BTC-USDT")
    client.post(f"/admin/exchange/market/{market.pk}/change/", {**form, "taker_fee_rate": "0.0015"}, **FROM)
    client.post("/admin/exchange/market/", {"action": "set_halted", ACTION_CHECKBOX_NAME: [market.pk],
                                            "confirm": "yes", "reason": "incident 42"}, **FROM)

    created = last("MARKET_CREATE")
    assert (created.market, created.after["taker_fee_rate"]) == ("BTC-USDT", "0.002")
    updated = last("MARKET_UPDATE")
    assert (updated.before, updated.after) == ({"taker_fee_rate": "0.002"}, {"taker_fee_rate": "0.0015"})
    halt = last("MARKET_HALT")
    assert (halt.market, halt.before, halt.after) == ("BTC-USDT", {"status": "TRADING"},
                                                      {"requested_status": "HALTED", "reason": "incident 42"})
    for row in (created, updated, halt):
        assert_from_request(row, staff=superuser)


def test_fee_tiers_and_overrides(client, superuser, alice):  # noqa: F811
    client.post("/admin/wallet/feetier/add/", {"name": "VIP 1", "volume_30d_min": "100000", "maker_fee_rate": "0.0008",
                                               "taker_fee_rate": "0.0016"}, **FROM)
    tier = FeeTier.objects.get()
    client.post(f"/admin/wallet/feetier/{tier.pk}/delete/", {"post": "yes"}, **FROM)
    client.post("/admin/wallet/feeoverride/add/", {"user": alice.pk, "maker_fee_rate": "0", "taker_fee_rate": "0.0005",
                                                   "reason": "market maker agreement"}, **FROM)

    assert last("FEE_TIER_CREATE").after["maker_fee_rate"] == "0.0008"
    deleted = last("FEE_TIER_DELETE")
    assert (deleted.object_id, deleted.before["name"], deleted.after) == (str(tier.pk), "VIP 1", None)
    override = last("FEE_OVERRIDE_CREATE")
    assert (override.subject_user_id, override.after["taker_fee_rate"]) == (alice.pk, "0.0005")
    assert FeeOverride.objects.count() == 1
    assert_from_request(override, staff=superuser)


def test_branding_edits(client, superuser):
    form = {"operator_name": "Acme Exchange", "short_name": "Acme", "primary_colour": "#0b7285",
            "accent_colour": "#f59f00", "background_colour": "#10151c", "is_active": "on"}
    client.post("/admin/exchange/branding/add/", form, **FROM)
    branding = Branding.objects.get()
    client.post(f"/admin/exchange/branding/{branding.pk}/change/", {**form, "short_name": "ACME"}, **FROM)

    assert last("BRANDING_CREATE").after["operator_name"] == "Acme Exchange"
    row = last("BRANDING_UPDATE")
    assert (row.before, row.after) == ({"short_name": "Acme"}, {"short_name": "ACME"})
    assert_from_request(row, staff=superuser)


def test_legal_holds_placed_and_released(client, superuser, alice):  # noqa: F811
    client.post("/admin/exchange/legalhold/add/", {"user": alice.pk, "reason": "subpoena 2026-17"}, **FROM)
    from exchange.audit.models import LegalHold

    hold = LegalHold.objects.get()
    client.post("/admin/exchange/legalhold/", {"action": "release_selected", ACTION_CHECKBOX_NAME: [hold.pk],
                                               "confirm": "yes", "reason": "case closed"}, **FROM)

    placed = last("LEGAL_HOLD_SET")
    assert (placed.subject_user_id, placed.after["reason"]) == (alice.pk, "subpoena 2026-17")
    assert hold.created_by == superuser
    released = last("LEGAL_HOLD_RELEASE")
    assert released.before["released_at"] is None and released.after["release_reason"] == "case closed"
    assert_from_request(released, staff=superuser)
    hold.refresh_from_db()
    assert hold.released_by == superuser


# -- commands ------------------------------------------------------------------------------------


def test_the_demo_loader_audits_what_it_creates_once():
    """load_demo's assets, markets, users and roles are audited as the command's; a second run,
    which creates nothing, writes no ASSET/MARKET/USER/ROLE rows."""
    before = AuditLog.objects.order_by("-id").values_list("id", flat=True).first() or 0
    call_command("load_demo", stdout=None)
    first = AuditLog.objects.count()
    call_command("load_demo", stdout=None)

    rows = AuditLog.objects.filter(id__gt=before,
                                   action__in=["ASSET_CREATE", "MARKET_CREATE", "USER_CREATE", "ROLE_CREATE"])
    assert {row.actor_system for row in rows} == {"manage.py load_demo"}
    assert sorted(rows.filter(action="MARKET_CREATE").values_list("market", flat=True)) == ["BTC-USDT", "ETH-USDT"]
    assert "password" not in rows.filter(action="USER_CREATE").first().after
    assert AuditLog.objects.count() == first


def test_sync_roles_audits_a_role_whose_permissions_it_changes():
    call_command("sync_roles", stdout=None)
    support = Group.objects.get(name=SUPPORT)
    support.permissions.clear()

    call_command("sync_roles", stdout=None)

    row = last("ROLE_CHANGE")
    assert (row.object_id, row.before) == (str(support.pk), {"permissions": []})
    assert row.actor_system == "manage.py sync_roles"
    assert "orders.view_order" in row.after["permissions"]


def test_back_office_sign_in_and_failed_sign_in(client):
    """The admin's own login page goes through the same signals: LOGIN as staff, LOGIN_FAILED anonymous."""
    UserFactory(username="olga", is_staff=True)

    client.post("/admin/login/", {"username": "olga", "password": "not-it"}, **FROM)
    client.post("/admin/login/", {"username": "olga", "password": "correct-horse-battery"}, **FROM)

    olga = User.objects.get(username="olga")
    failed = last("LOGIN_FAILED")
    assert (failed.actor_system, failed.subject_user_id, failed.ip) == ("anonymous", olga.pk, IP)
    assert_from_request(last("LOGIN"), staff=olga)


def test_the_address_behind_trusted_proxies(settings, api, alice):  # noqa: F811
    """With NUM_PROXIES set, the address recorded is the one the outermost trusted proxy saw
    (exchange.core.net.client_ip), not what the client wrote in X-Forwarded-For."""
    settings.NUM_PROXIES = 1

    api.post("/api/v1/api-keys", {"label": "bot"}, format="json", REMOTE_ADDR="10.0.0.2",
             HTTP_X_FORWARDED_FOR="6.6.6.6, 192.0.2.44", HTTP_USER_AGENT=AGENT)

    assert last("API_KEY_CREATE").ip == "192.0.2.44"


def test_createsuperuser_records_the_account_it_makes_and_nothing_after(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a long enough passphrase 42")
    before = AuditLog.objects.order_by("-id").values_list("id", flat=True).first() or 0
    call_command("createsuperuser", interactive=False, username="founder", email="founder@example.com",
                 stdout=None)
    founder = get_user_model().objects.get(username="founder")

    created = AuditLog.objects.get(id__gt=before, action="USER_CREATE")
    assert (created.object_type, created.object_id, created.subject_user_id) == ("auth.user", str(founder.pk),
                                                                                 founder.pk)
    assert created.after["is_superuser"] is True and created.after["is_staff"] is True
    assert created.after["username"] == "founder" and "password" not in created.after
    assert created.actor_system == current_process() and created.actor_staff_id is None

    with pytest.raises(CommandError):  # the name is taken: nothing is created, nothing recorded
        call_command("createsuperuser", interactive=False, username="founder", email="", stdout=None)
    UserFactory(username="later")  # created after the command: not its to record
    assert AuditLog.objects.filter(id__gt=before, action="USER_CREATE").count() == 1
