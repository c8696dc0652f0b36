"""Account security end to end over HTTP: sign-in lockout per username and address, the TOTP second factor
(required for staff, optional for traders), step-up before money can leave, withdraw keys' narrow allowlists,
and usernames unique after Unicode normalization and case folding."""

import pytest
from axes.models import AccessAttempt
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import IntegrityError, connection, transaction
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.test import APIClient

from exchange.audit.models import AuditLog
from exchange.roles import COMPLIANCE, OPERATORS, roles_sync
from tests.factories import UserFactory, login_staff
from tests.wallet.conftest import alice, btc, fund, operator  # noqa: F401  (fixtures; fund needs operator)
from wallet.models import Withdrawal

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"  # UserFactory's
HERE, ELSEWHERE = "198.51.100.1", "198.51.100.2"


def assert_error(response, status: int, code: str, field=None):
    assert response.status_code == status, response.content
    assert (response.json()["code"], response.json()["field"]) == (code, field), response.json()


def api_login(client, username, password=PASSWORD, ip=HERE, **extra):
    return client.post("/api/v1/auth/login", {"username": username, "password": password, **extra}, format="json",
                       REMOTE_ADDR=ip)


def code_for(device: TOTPDevice) -> str:
    """The code the authenticator app shows now; the device forgets which codes were used and any throttling
    first, as if the next 30-second window had come."""
    TOTPDevice.objects.filter(pk=device.pk).update(last_t=-1, throttling_failure_count=0,
                                                   throttling_failure_timestamp=None)
    device.refresh_from_db()
    return f"{TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift).token():0{device.digits}d}"


def authenticator(user) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)


# --- lockout -------------------------------------------------------------------------------------


def test_five_failures_lock_the_username_from_that_address_only(settings):
    """After LOGIN_FAILURE_LIMIT wrong passwords even the right one is refused (429) from that address; the same
    name from another address, another name from the same address, and the name in other case are counted as
    they should be (case folds into the same counter)."""
    settings.AXES_FAILURE_LIMIT = 5
    UserFactory(username="alice")
    UserFactory(username="bob")
    client = APIClient()

    for attempt in range(4):
        username = "ALICE" if attempt == 3 else "alice"
        assert_error(api_login(client, username, "wrong-password"), 400, "INVALID_CREDENTIALS")
    # The fifth failure reaches the limit: it is told so, and so is the right password afterwards.
    assert_error(api_login(client, "alice", "wrong-password"), 429, "LOGIN_LOCKED_OUT")

    assert_error(api_login(client, "alice"), 429, "LOGIN_LOCKED_OUT")
    assert api_login(APIClient(), "alice", ip=ELSEWHERE).status_code == 200
    assert api_login(APIClient(), "bob").status_code == 200
    assert AuditLog.objects.filter(action="LOGIN_FAILED").count() >= 5


def test_a_success_clears_the_failures(settings):
    settings.AXES_FAILURE_LIMIT = 3
    UserFactory(username="alice")
    client = APIClient()
    for _ in range(2):
        api_login(client, "alice", "wrong-password")
    assert api_login(client, "alice").status_code == 200
    for _ in range(2):
        api_login(APIClient(), "alice", "wrong-password")
    assert api_login(APIClient(), "alice").status_code == 200


def test_the_back_office_form_is_locked_out_too_and_an_operator_lifts_it(client, settings):
    """The admin's sign-in shares the counter; lifting the lockout is an audited action with a reason."""
    settings.AXES_FAILURE_LIMIT = 3
    olga = UserFactory(username="olga", is_staff=True)
    authenticator(olga)
    for _ in range(3):
        client.post("/admin/login/", {"username": "olga", "password": "nope"}, REMOTE_ADDR=HERE)

    refused = client.post("/admin/login/", {"username": "olga", "password": PASSWORD, "otp_token": "000000"},
                          REMOTE_ADDR=HERE)
    assert b"Too many failed sign-ins" in refused.content
    attempt = AccessAttempt.objects.get()

    operator = UserFactory(username="oscar", is_staff=True)
    operator.groups.add(roles_sync()[OPERATORS])
    login_staff(client, operator)
    assert b"olga" in client.get("/admin/axes/accessattempt/").content
    client.post("/admin/axes/accessattempt/", {"action": "lift_selected", ACTION_CHECKBOX_NAME: [attempt.pk],
                                               "confirm": "yes", "reason": "she called support, ticket 42"})

    assert not AccessAttempt.objects.exists()
    row = AuditLog.objects.get(action="LOGIN_LOCKOUT_RESET")
    assert (row.actor_staff_id, row.before["username"], row.after["reason"]) == \
        (operator.pk, "olga", "she called support, ticket 42")


# --- the second factor ------------------------------------------------------------------------------


def test_staff_enroll_at_their_first_sign_in_then_need_a_code(client):
    """A staff member without an authenticator signs in with the password but reaches only the enrollment page;
    a right code turns it on and opens the back office; from then on the sign-in form wants a code."""
    olga = UserFactory(username="olga", is_staff=True)
    olga.groups.add(roles_sync()[OPERATORS])

    signed_in = client.post("/admin/login/?next=/admin/", {"username": "olga", "password": PASSWORD})
    assert signed_in.status_code == 302 and signed_in.url == "/admin/two-factor/"
    assert client.get("/admin/wallet/deposit/").url == "/admin/two-factor/"
    setup = client.get("/admin/two-factor/")
    assert b"<svg" in setup.content and b"otp-key" in setup.content
    pending = TOTPDevice.objects.get(user=olga, confirmed=False)
    assert client.post("/admin/two-factor/", {"otp_token": "000000"}).status_code == 200
    assert client.post("/admin/two-factor/", {"otp_token": code_for(pending)}).url == "/admin/"
    assert client.get("/admin/wallet/deposit/").status_code == 200
    assert AuditLog.objects.get(action="TOTP_ENABLE").subject_user_id == olga.pk

    client.post("/admin/logout/")
    without = client.post("/admin/login/", {"username": "olga", "password": PASSWORD})
    assert b"Enter the code from your authenticator app" in without.content
    wrong = client.post("/admin/login/", {"username": "olga", "password": PASSWORD, "otp_token": "000000"})
    assert b"authenticator code is wrong" in wrong.content
    assert AuditLog.objects.filter(action="LOGIN_FAILED", subject_user_id=olga.pk).exists()
    device = TOTPDevice.objects.get(user=olga, confirmed=True)
    right = client.post("/admin/login/?next=/admin/", {"username": "olga", "password": PASSWORD,
                                                       "otp_token": code_for(device)})
    assert right.url == "/admin/" and client.get("/admin/").status_code == 200


def test_staff_sessions_need_the_second_factor_in_the_api_too(client):
    """A staff member's API sign-in needs an authenticator (403 TOTP_SETUP_REQUIRED without one) and its code; a
    password-only staff session is refused by the API (401 OTP_REQUIRED)."""
    carla = UserFactory(username="carla", is_staff=True)
    carla.groups.add(roles_sync()[COMPLIANCE])
    assert_error(api_login(APIClient(), "carla"), 403, "TOTP_SETUP_REQUIRED")
    client.post("/admin/login/", {"username": "carla", "password": PASSWORD})  # enrollment pending
    assert_error(client.get("/api/v1/auth/me"), 401, "OTP_REQUIRED")

    device = authenticator(carla)
    api = APIClient()
    assert_error(api_login(api, "carla"), 401, "OTP_REQUIRED", "otp")
    assert api_login(api, "carla", otp=code_for(device)).status_code == 200
    assert api.get("/api/v1/compliance/audit-logs?format=jsonl").status_code == 200


def test_a_trader_turns_two_factor_on_signs_in_with_it_and_off_again():
    alice = UserFactory(username="alice")
    api = APIClient()
    api.force_login(alice)
    assert api.get("/api/v1/auth/2fa").json() == {"enabled": False}

    setup = api.post("/api/v1/auth/2fa/setup").json()
    assert setup["otpauth_url"].startswith("otpauth://totp/") and len(setup["key"].replace(" ", "")) == 32
    pending = TOTPDevice.objects.get(user=alice, confirmed=False)
    assert_error(api.post("/api/v1/auth/2fa/confirm", {"otp": "000000"}, format="json"), 400, "INVALID_OTP", "otp")
    assert api.post("/api/v1/auth/2fa/confirm", {"otp": code_for(pending)}, format="json").json() == {"enabled": True}
    assert_error(api.post("/api/v1/auth/2fa/setup"), 409, "TOTP_ALREADY_ENABLED")

    device = TOTPDevice.objects.get(user=alice, confirmed=True)
    fresh = APIClient()
    assert_error(api_login(fresh, "alice"), 401, "OTP_REQUIRED", "otp")
    assert_error(api_login(fresh, "alice", otp="123456"), 400, "INVALID_OTP", "otp")
    assert api_login(fresh, "alice", otp=code_for(device)).status_code == 200

    assert fresh.post("/api/v1/auth/2fa/disable", {"otp": code_for(device)}, format="json").status_code == 204
    assert not TOTPDevice.objects.filter(user=alice).exists()
    assert [row.action for row in AuditLog.objects.filter(action__startswith="TOTP_").order_by("id")] == \
        ["TOTP_ENABLE", "TOTP_DISABLE"]


def test_staff_cannot_turn_their_second_factor_off():
    olga = UserFactory(username="olga", is_staff=True)
    device = authenticator(olga)
    api = APIClient()
    login_staff(api, olga)
    assert_error(api.post("/api/v1/auth/2fa/disable", {"otp": code_for(device)}, format="json"), 403,
                 "TOTP_REQUIRED_FOR_STAFF")


# --- step-up ----------------------------------------------------------------------------------------


def test_a_session_withdrawal_needs_the_password_or_the_code(alice, btc, fund):  # noqa: F811
    """Without step-up nothing is held; a wrong password is a failed sign-in; with two-factor on, the password
    no longer suffices and the code does."""
    fund(alice, btc, "2")
    api = APIClient()
    api.force_login(alice)
    body = {"asset": "BTC", "amount": "0.5", "address": "bc1qexample"}

    assert_error(api.post("/api/v1/withdrawals", body, format="json"), 403, "STEP_UP_REQUIRED", "password")
    assert_error(api.post("/api/v1/withdrawals", {**body, "password": "guess"}, format="json"), 400,
                 "INVALID_PASSWORD", "password")
    assert not Withdrawal.objects.exists()
    assert AuditLog.objects.filter(action="LOGIN_FAILED", subject_user_id=alice.pk).exists()
    assert api.post("/api/v1/withdrawals", {**body, "password": PASSWORD}, format="json").status_code == 201

    device = authenticator(alice)
    assert_error(api.post("/api/v1/withdrawals", {**body, "password": PASSWORD}, format="json"), 403,
                 "STEP_UP_REQUIRED", "otp")
    assert api.post("/api/v1/withdrawals", {**body, "otp": code_for(device)}, format="json").status_code == 201


def test_creating_a_key_that_may_withdraw_needs_step_up_and_a_narrow_allowlist():
    """Read/trade keys need nothing more; a withdraw key needs the password and networks of at most /16 (IPv4)
    or /48 (IPv6)."""
    alice = UserFactory(username="alice")
    api = APIClient()
    api.force_login(alice)

    def create(**body):
        return api.post("/api/v1/api-keys", {"label": "bot", **body}, format="json")

    assert create(permissions=["trade"]).status_code == 201
    withdraw = {"permissions": ["withdraw"], "ip_allowlist": ["203.0.0.0/16", "2001:db8:1::/48"]}
    assert_error(create(**withdraw), 403, "STEP_UP_REQUIRED", "password")
    assert_error(create(permissions=["withdraw"], ip_allowlist=["203.0.0.0/15"], password=PASSWORD), 400,
                 "IP_ALLOWLIST_TOO_WIDE", "ip_allowlist.0")
    assert_error(create(permissions=["withdraw"], ip_allowlist=["198.51.100.7", "2001:db8::/47"], password=PASSWORD),
                 400, "IP_ALLOWLIST_TOO_WIDE", "ip_allowlist.1")
    assert create(**withdraw, password=PASSWORD).status_code == 201
    # Keys that cannot withdraw may still be used from anywhere.
    assert create(permissions=["trade"], ip_allowlist=["0.0.0.0/0"]).status_code == 201


def test_a_locked_out_user_cannot_step_up(settings, alice, btc, fund):  # noqa: F811
    settings.AXES_FAILURE_LIMIT = 2
    fund(alice, btc, "1")
    api = APIClient()
    api.force_login(alice)
    body = {"asset": "BTC", "amount": "0.5", "address": "bc1qexample", "password": "wrong"}
    api.post("/api/v1/withdrawals", body, format="json")
    api.post("/api/v1/withdrawals", body, format="json")

    assert_error(api.post("/api/v1/withdrawals", {**body, "password": PASSWORD}, format="json"), 429,
                 "LOGIN_LOCKED_OUT")


# --- usernames ------------------------------------------------------------------------------------


@pytest.mark.parametrize("taken", ["ALICE", "Alice", "ａｌｉｃｅ", "ＡＬＩＣＥ"])
def test_usernames_that_normalize_alike_are_one_name(taken):
    """Registration refuses case and compatibility variants of an existing name; so does the database."""
    UserFactory(username="alice")

    response = APIClient().post("/api/v1/auth/register", {"username": taken, "email": "new@example.com",
                                                          "password": "a-long-unusual-passphrase"}, format="json")

    assert_error(response, 400, "USERNAME_TAKEN", "username")
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("INSERT INTO auth_user (username, password, is_superuser, first_name, last_name, email, "
                       "is_staff, is_active, date_joined) VALUES (%s, '', false, '', '', '', false, true, now())",
                       [taken])


def test_the_migration_names_the_clashing_accounts():
    """On a database that already holds clashing names, the migration stops with their list (not an index error)."""
    import importlib

    from django.core.management.base import CommandError

    migration = importlib.import_module("exchange.migrations.0010_username_unique_normalized")
    with connection.cursor() as cursor:
        cursor.execute("DROP INDEX auth_user_username_key_unique")  # rolled back with the test
    first, second = UserFactory(username="Mallory"), UserFactory(username="mallory")

    with pytest.raises(CommandError) as refused, connection.schema_editor() as editor:
        migration.refuse_clashes(None, editor)

    assert f"'Mallory' (id {first.pk}), 'mallory' (id {second.pk})" in str(refused.value)
    assert "Rename all but one" in str(refused.value)


def test_the_back_office_refuses_a_clashing_username(admin_client):
    UserFactory(username="alice")
    response = admin_client.post("/admin/auth/user/add/", {"username": "ＡＬＩＣＥ", "usable_password": "false"})
    assert response.status_code == 200 and b"already exists" in response.content

