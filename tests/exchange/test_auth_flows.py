"""End-user flows through HTTP: register, login, logout, me, CSRF, and managing one's API keys."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from exchange.apikeys.models import ApiKey
from tests.factories import UserFactory, api_key_for
from tests.signed_client import SignedClient

pytestmark = pytest.mark.django_db

User = get_user_model()
PASSWORD = "correct-horse-battery"
STRONG = "a-long-unusual-passphrase"


def assert_error(response, status: int, code: str, field=None):
    assert response.status_code == status, response.content
    body = response.json()
    assert (body["code"], body["field"]) == (code, field), body
    return body


def session_for(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


# --- registration ------------------------------------------------------------


def test_register_creates_the_user_and_signs_in():
    """201 with the user (no password), the password is hashed, and the same client is now signed in."""
    client = APIClient()

    response = client.post(
        "/api/v1/auth/register", {"username": "alice", "email": "alice@example.com", "password": STRONG}, format="json"
    )

    assert response.status_code == 201, response.json()
    assert response.json()["username"] == "alice" and "password" not in response.json()
    user = User.objects.get(username="alice")
    assert user.check_password(STRONG) and user.password != STRONG
    assert client.get("/api/v1/auth/me").json()["auth"] == {"method": "session"}


@pytest.mark.parametrize(
    "password, code",
    [
        ("short1x", "PASSWORD_TOO_SHORT"),
        ("password123", "PASSWORD_TOO_COMMON"),
        ("8675309123456", "PASSWORD_ENTIRELY_NUMERIC"),
        ("alice-wonderland", "PASSWORD_TOO_SIMILAR"),
    ],
)
def test_weak_passwords_are_refused_with_stable_codes_and_no_user_is_created(password, code):
    """Each of Django's password validators maps to a PASSWORD_* code on field password; nothing is written."""
    response = APIClient().post(
        "/api/v1/auth/register",
        {"username": "alice-wonderland", "email": "alice@example.com", "password": password},
        format="json",
    )

    body = assert_error(response, 400, code, "password")
    assert code in [error["code"] for error in body["errors"]]
    assert not User.objects.filter(username="alice-wonderland").exists()


def test_duplicate_username_or_email_is_refused_regardless_of_case():
    """'ALICE' cannot register next to 'alice', nor a differently cased e-mail address."""
    UserFactory(username="alice", email="alice@example.com")
    client = APIClient()

    taken = client.post(
        "/api/v1/auth/register", {"username": "ALICE", "email": "new@example.com", "password": STRONG}, format="json"
    )
    assert_error(taken, 400, "USERNAME_TAKEN", "username")
    email = client.post(
        "/api/v1/auth/register", {"username": "bob", "email": "Alice@Example.com", "password": STRONG}, format="json"
    )
    assert_error(email, 400, "EMAIL_TAKEN", "email")
    assert User.objects.count() == 1


def test_register_input_is_validated_field_by_field():
    """Every invalid field is listed under `errors` with its own code."""
    response = APIClient().post("/api/v1/auth/register", {"username": "no spaces", "email": "nope"}, format="json")

    body = response.json()
    assert response.status_code == 400
    assert {(e["field"], e["code"]) for e in body["errors"]} == {
        ("username", "INVALID"), ("email", "INVALID"), ("password", "REQUIRED"),
    }


# --- session login -------------------------------------------------------------


def test_login_me_logout():
    """The session lifecycle: anonymous 401, login, /me reports the session, logout, 401 again."""
    UserFactory(username="bob", password=PASSWORD)
    client = APIClient()

    assert_error(client.get("/api/v1/auth/me"), 401, "NOT_AUTHENTICATED")
    login = client.post("/api/v1/auth/login", {"username": "bob", "password": PASSWORD}, format="json")
    assert login.status_code == 200 and login.json()["username"] == "bob"
    me = client.get("/api/v1/auth/me").json()
    assert (me["username"], me["email"], me["auth"]) == ("bob", "bob@example.test", {"method": "session"})

    assert client.post("/api/v1/auth/logout").status_code == 204
    assert_error(client.get("/api/v1/auth/me"), 401, "NOT_AUTHENTICATED")


def test_wrong_credentials_do_not_say_which_part_was_wrong():
    """Wrong password, unknown user and disabled user all get the same INVALID_CREDENTIALS."""
    UserFactory(username="bob", password=PASSWORD)
    inactive = UserFactory(username="carol", password=PASSWORD)
    User.objects.filter(pk=inactive.pk).update(is_active=False)
    client = APIClient()

    for username, password in (("bob", "wrong-password"), ("nobody", PASSWORD), ("carol", PASSWORD)):
        response = client.post("/api/v1/auth/login", {"username": username, "password": password}, format="json")
        assert_error(response, 400, "INVALID_CREDENTIALS")


def test_browser_flow_with_csrf_tokens():
    """Login, and every unsafe request of the session afterwards, need the CSRF token; the token rotates at login."""
    UserFactory(username="bob", password=PASSWORD)
    browser = APIClient(enforce_csrf_checks=True)

    refused = browser.post("/api/v1/auth/login", {"username": "bob", "password": PASSWORD}, format="json")
    assert_error(refused, 403, "CSRF_FAILED")

    token = browser.get("/api/v1/auth/csrf").json()["csrf_token"]
    assert browser.cookies["csrftoken"].value
    login = browser.post("/api/v1/auth/login", {"username": "bob", "password": PASSWORD}, format="json",
                         headers={"X-CSRFToken": token})
    assert login.status_code == 200

    key = {"label": "bot", "permissions": ["trade"]}
    assert_error(browser.post("/api/v1/api-keys", key, format="json"), 403, "CSRF_FAILED")
    rotated = browser.cookies["csrftoken"].value
    created = browser.post("/api/v1/api-keys", key, format="json", headers={"X-CSRFToken": rotated})
    assert created.status_code == 201, created.json()
    assert_error(browser.post("/api/v1/auth/logout"), 403, "CSRF_FAILED")
    assert browser.post("/api/v1/auth/logout", headers={"X-CSRFToken": rotated}).status_code == 204


# --- API key management ----------------------------------------------------------


def test_create_shows_the_secret_once_and_the_key_signs_requests():
    """Creation returns the secret and normalized settings; listing never shows it; the new key signs requests."""
    user = UserFactory()
    client = session_for(user)

    created = client.post(
        "/api/v1/api-keys",
        {"label": "market maker", "permissions": ["trade"], "ip_allowlist": ["127.0.0.1", "10.0.0.0/8"]},
        format="json",
    )

    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["permissions"] == ["read", "trade"]  # read is implied
    assert body["ip_allowlist"] == ["127.0.0.1/32", "10.0.0.0/8"]
    assert body["status"] == "active" and len(body["secret"]) >= 64
    listed = client.get("/api/v1/api-keys").json()
    assert [k["key_id"] for k in listed] == [body["key_id"]]
    assert "secret" not in listed[0] and body["secret"] not in str(listed)

    me = SignedClient(body["key_id"], body["secret"]).get("/api/v1/auth/me")
    assert me.status_code == 200 and me.json()["username"] == user.username


def test_users_only_see_and_revoke_their_own_keys():
    """Another user's key is invisible: not listed, and revoking it is a 404 that changes nothing."""
    alice, bob = UserFactory(), UserFactory()
    alices_key, _ = api_key_for(alice)
    bobs_key, bobs_secret = api_key_for(bob)
    client = session_for(alice)

    assert [k["key_id"] for k in client.get("/api/v1/api-keys").json()] == [alices_key.key_id]
    assert_error(client.delete(f"/api/v1/api-keys/{bobs_key.key_id}"), 404, "NOT_FOUND")
    assert_error(client.delete("/api/v1/api-keys/no-such-key"), 404, "NOT_FOUND")
    assert ApiKey.objects.get(pk=bobs_key.pk).revoked_at is None
    assert SignedClient(bobs_key.key_id, bobs_secret).get("/api/v1/auth/me").status_code == 200


def test_revoke_takes_effect_at_once_and_is_idempotent():
    """After DELETE the key is refused; a second DELETE is 204 and keeps the first revocation time."""
    user = UserFactory()
    api_key, secret = api_key_for(user)
    client = session_for(user)

    assert client.delete(f"/api/v1/api-keys/{api_key.key_id}").status_code == 204
    revoked_at = ApiKey.objects.get(pk=api_key.pk).revoked_at
    assert client.delete(f"/api/v1/api-keys/{api_key.key_id}").status_code == 204
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at == revoked_at
    assert client.get("/api/v1/api-keys").json()[0]["status"] == "revoked"
    assert_error(SignedClient(api_key.key_id, secret).get("/api/v1/auth/me"), 401, "API_KEY_REVOKED")


@pytest.mark.parametrize(
    "payload, code, field",
    [
        ({"ip_allowlist": ["10.0.0.1/8"]}, "INVALID_IP_ALLOWLIST", "ip_allowlist.0"),
        ({"ip_allowlist": ["127.0.0.1", "not-an-ip"]}, "INVALID_IP_ALLOWLIST", "ip_allowlist.1"),
        ({"permissions": ["withdraw"]}, "WITHDRAW_REQUIRES_IP_ALLOWLIST", "ip_allowlist"),
        ({"permissions": ["admin"]}, "INVALID_CHOICE", "permissions.0"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "EXPIRES_AT_IN_PAST", "expires_at"),
        ({"label": ""}, "BLANK", "label"),
    ],
)
def test_invalid_key_requests_are_400_naming_the_field(payload, code, field):
    """Bad allowlists, withdraw without allowlist, unknown permissions, past expiry, empty label: 400 naming the field,
    nothing created.
    """
    client = session_for(UserFactory())
    assert_error(client.post("/api/v1/api-keys", {"label": "bot", **payload}, format="json"), 400, code, field)
    assert not ApiKey.objects.exists()


def test_a_user_holds_a_limited_number_of_active_keys(settings):
    """API_KEYS_MAX_PER_USER counts active keys only: revoking one makes room."""
    settings.API_KEYS_MAX_PER_USER = 2
    user = UserFactory()
    client = session_for(user)
    first = client.post("/api/v1/api-keys", {"label": "1"}, format="json").json()
    tomorrow = (timezone.now() + timedelta(days=1)).isoformat()
    client.post("/api/v1/api-keys", {"label": "2", "expires_at": tomorrow}, format="json")

    assert_error(client.post("/api/v1/api-keys", {"label": "3"}, format="json"), 400, "API_KEY_LIMIT_REACHED")
    client.delete(f"/api/v1/api-keys/{first['key_id']}")
    assert client.post("/api/v1/api-keys", {"label": "3"}, format="json").status_code == 201


def test_key_management_needs_a_signed_in_user():
    """Anonymous requests to key management are 401."""
    assert_error(APIClient().get("/api/v1/api-keys"), 401, "NOT_AUTHENTICATED")
    assert_error(APIClient().post("/api/v1/api-keys", {"label": "x"}, format="json"), 401, "NOT_AUTHENTICATED")
