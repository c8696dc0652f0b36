"""API key authentication end to end through HTTP: signatures, rejections, permissions, IPs, storage."""

import time
from datetime import timedelta

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from exchange.apikeys.encryption import secret_decrypt
from exchange.apikeys.models import ApiKey
from exchange.apikeys.services import api_key_create, api_key_revoke
from exchange.apikeys.signing import signed_headers
from exchange.core import localcache
from exchange.core.throttling import REPLAY_KEY_PREFIX
from tests.factories import UserFactory, api_key_for
from tests.signed_client import SignedClient

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.exchange.apikeys_urls")]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def signed_client(permissions=("read",), **kwargs) -> tuple[SignedClient, ApiKey]:
    api_key, secret = api_key_for(permissions=permissions, **kwargs)
    return SignedClient(api_key.key_id, secret), api_key


def assert_error(response, status: int, code: str):
    assert response.status_code == status, response.content
    assert response.json()["code"] == code, response.json()
    return response.json()


# --- valid requests ------------------------------------------------------------


def test_signed_get_with_query_authenticates_as_the_keys_owner():
    """The signature covers the query; the server rebuilds it from the raw query string."""
    client, api_key = signed_client()

    response = client.get("/test/echo", query={"symbol": "BTC-USDT", "tag": "a c"})

    assert response.status_code == 200, response.json()
    assert response.json() == {"user": api_key.user.username, "query": {"symbol": ["BTC-USDT"], "tag": ["a c"]}}
    me = client.get("/api/v1/auth/me").json()
    assert me["auth"] == {"method": "api_key", "key_id": api_key.key_id, "permissions": ["read"]}


def test_a_signed_request_may_not_repeat_a_query_parameter():
    """``?market=A&market=B`` and ``?market=B&market=A`` have one canonical query, hence one
    signature, while the server reads one value: a signed request repeating a key is refused
    (400, naming it), before its signature is even checked; a session request is not concerned."""
    client, api_key = signed_client()

    response = client.get("/test/echo", query="market=A&market=B")
    body = assert_error(response, 400, "REPEATED_QUERY_PARAMETER")
    assert body["field"] == "market"
    swapped = signed_headers(api_key.key_id, client.secret, "GET", "/test/echo", "market=A&market=B")
    assert_error(client.client.get("/test/echo?market=B&market=A", headers=swapped), 400, "REPEATED_QUERY_PARAMETER")


def test_signed_post_hashes_the_body_and_a_changed_body_is_refused():
    """The same body that was signed passes; a body altered in transit does not."""
    client, _ = signed_client()

    ok = client.post("/test/echo", json={"price": "65000.10", "side": "BUY"})
    assert ok.status_code == 200
    assert ok.json()["data"] == {"price": "65000.10", "side": "BUY"}

    signed_body = b'{"price": "1"}'
    headers = signed_headers(client.key_id, client.secret, "POST", "/test/echo", None, signed_body)
    tampered = client.client.post("/test/echo", b'{"price": "2"}', content_type="application/json", headers=headers)
    body = assert_error(tampered, 401, "INVALID_SIGNATURE")
    assert body["field"] == "X-SIGNATURE"
    assert tampered["WWW-Authenticate"] == 'ApiKey realm="api"'


@pytest.mark.parametrize(
    "change",
    [
        {"query": {"symbol": "ETH-USDT"}},  # a different query than signed
        {"path": "/api/v1/auth/me"},  # a different path than signed
        {"method": "DELETE"},  # a different method than signed
        {"secret": "not-the-secret"},  # signed with the wrong secret
    ],
)
def test_anything_not_as_signed_is_an_invalid_signature(change):
    """Signing one query, path, method or with one secret and sending another fails the HMAC check."""
    client, api_key = signed_client()
    headers = signed_headers(api_key.key_id, change.get("secret", client.secret), change.get("method", "GET"),
                             change.get("path", "/test/echo"), change.get("query", {"symbol": "BTC-USDT"}))

    response = client.client.get("/test/echo", {"symbol": "BTC-USDT"}, headers=headers)

    assert_error(response, 401, "INVALID_SIGNATURE")


def test_api_key_requests_need_no_csrf_token():
    """A key-signed POST passes even with CSRF checks enforced; the session would need a token."""
    client, _ = signed_client(permissions=("read", "trade"))
    client.client = APIClient(enforce_csrf_checks=True)

    assert client.post("/test/trade", json={}).status_code == 201


def test_session_requests_without_csrf_token_are_refused_for_unsafe_methods():
    """A logged-in session may GET freely, but POST needs the token from /auth/csrf (403 CSRF_FAILED without)."""
    session = APIClient(enforce_csrf_checks=True)
    session.force_login(UserFactory())

    assert session.get("/test/echo").status_code == 200
    refused = session.post("/test/echo", {"a": 1}, format="json")
    assert_error(refused, 403, "CSRF_FAILED")

    token = session.get("/api/v1/auth/csrf").json()["csrf_token"]
    accepted = session.post("/test/echo", {"a": 1}, format="json", headers={"X-CSRFToken": token})
    assert accepted.status_code == 200


def test_unauthenticated_requests_are_401_not_authenticated():
    """No credentials at all: 401 (not 403) with the API key challenge, because the key scheme comes first."""
    response = APIClient().get("/api/v1/auth/me")
    assert_error(response, 401, "NOT_AUTHENTICATED")
    assert response["WWW-Authenticate"] == 'ApiKey realm="api"'


# --- rejections ----------------------------------------------------------------


def test_unknown_key_is_invalid_api_key():
    """A key id the exchange never issued is refused before any signature work, naming X-API-KEY."""
    client = SignedClient("no-such-key", "whatever")
    body = assert_error(client.get("/test/echo"), 401, "INVALID_API_KEY")
    assert body["field"] == "X-API-KEY"


@pytest.mark.parametrize(
    "headers, code, field",
    [
        ({"X-SIGNATURE": ""}, "MISSING_AUTH_HEADER", "X-SIGNATURE"),
        ({"X-TIMESTAMP": ""}, "MISSING_AUTH_HEADER", "X-TIMESTAMP"),
        ({"X-TIMESTAMP": "12.5"}, "INVALID_TIMESTAMP", "X-TIMESTAMP"),
        ({"X-RECV-WINDOW": "0"}, "INVALID_RECV_WINDOW", "X-RECV-WINDOW"),
        ({"X-RECV-WINDOW": "60001"}, "INVALID_RECV_WINDOW", "X-RECV-WINDOW"),
        ({"X-RECV-WINDOW": "-5"}, "INVALID_RECV_WINDOW", "X-RECV-WINDOW"),
        ({"X-SIGNATURE": "zz" * 32}, "INVALID_SIGNATURE", "X-SIGNATURE"),
    ],
)
def test_malformed_signature_headers_are_refused_with_the_header_named(headers, code, field):
    """Each malformed or missing header gets its own code and names itself in `field`."""
    client, _ = signed_client()
    body = assert_error(client.get("/test/echo", headers=headers), 401, code)
    assert body["field"] == field


def test_recv_window_bounds():
    """A request is valid for X-RECV-WINDOW ms after X-TIMESTAMP; the window may be 1..60000 ms."""
    client, _ = signed_client()

    assert client.get("/test/echo", sign={"timestamp_ms": now_ms() - 4000}).status_code == 200  # default 5000
    stale = client.get("/test/echo", sign={"timestamp_ms": now_ms() - 6000})
    body = assert_error(stale, 401, "TIMESTAMP_OUTSIDE_RECV_WINDOW")
    assert abs(body["server_time_ms"] - now_ms()) < 5000
    wide = client.get("/test/echo", sign={"timestamp_ms": now_ms() - 50_000, "recv_window_ms": 60_000})
    assert wide.status_code == 200
    narrow = client.get("/test/echo", sign={"timestamp_ms": now_ms() - 1500, "recv_window_ms": 1000})
    assert_error(narrow, 401, "TIMESTAMP_OUTSIDE_RECV_WINDOW")


def test_timestamps_in_the_future_are_refused_beyond_the_clock_skew(settings):
    """Up to API_KEY_CLOCK_SKEW_MS ahead is tolerated (1 s by default, configurable); further is refused."""
    client, _ = signed_client()

    assert client.get("/test/echo", sign={"timestamp_ms": now_ms() + 500}).status_code == 200
    ahead = client.get("/test/echo", sign={"timestamp_ms": now_ms() + 3000})
    assert_error(ahead, 401, "TIMESTAMP_OUTSIDE_RECV_WINDOW")

    settings.API_KEY_CLOCK_SKEW_MS = 5000
    assert client.get("/test/echo", sign={"timestamp_ms": now_ms() + 3000}).status_code == 200


def test_a_replayed_request_is_refused(redis_app):
    """The exact same signed request sent twice: the second is a replay, remembered for window + skew."""
    client, api_key = signed_client()
    headers = signed_headers(api_key.key_id, client.secret, "GET", "/test/echo", recv_window_ms=7000)

    assert client.client.get("/test/echo", headers=headers).status_code == 200
    replay = client.client.get("/test/echo", headers=headers)
    assert_error(replay, 401, "REPLAYED_REQUEST")
    ttl_ms = redis_app.pttl(REPLAY_KEY_PREFIX + headers["X-SIGNATURE"])
    assert 7000 < ttl_ms <= 8000


def test_revoked_and_expired_keys_are_refused():
    """Revocation takes effect on the next request; a key past expires_at stops working."""
    revoked, api_key = signed_client()
    api_key_revoke(user=api_key.user, key_id=api_key.key_id)
    assert_error(revoked.get("/test/echo"), 401, "API_KEY_REVOKED")

    expiring, api_key = signed_client(expires_at=timezone.now() + timedelta(days=1))
    assert expiring.get("/test/echo").status_code == 200
    api_key.expires_at = timezone.now() - timedelta(seconds=1)  # time passes
    api_key.save(update_fields=["expires_at"])
    assert_error(expiring.get("/test/echo"), 401, "API_KEY_EXPIRED")


def test_key_of_a_disabled_account_is_refused():
    """Deactivating a user disables their keys too, with a code of its own."""
    client, api_key = signed_client()
    type(api_key.user).objects.filter(pk=api_key.user.pk).update(is_active=False)
    assert_error(client.get("/test/echo"), 401, "ACCOUNT_DISABLED")


def test_key_state_is_only_revealed_to_holders_of_the_secret():
    """A revoked key with a wrong signature gets INVALID_SIGNATURE, not API_KEY_REVOKED."""
    api_key, _ = api_key_for()
    api_key_revoke(user=api_key.user, key_id=api_key.key_id)
    assert_error(SignedClient(api_key.key_id, "guess").get("/test/echo"), 401, "INVALID_SIGNATURE")


# --- permissions ---------------------------------------------------------------


def test_a_read_only_key_cannot_trade_or_withdraw():
    """A read key reaches read endpoints only: views declaring trade or withdraw answer 403 naming the permission."""
    client, _ = signed_client(permissions=("read",))

    body = assert_error(client.post("/test/trade", json={}), 403, "API_KEY_PERMISSION_DENIED")
    assert "'trade'" in body["message"]
    assert_error(client.post("/test/withdraw", json={}), 403, "API_KEY_PERMISSION_DENIED")
    assert client.get("/test/echo").status_code == 200


def test_a_trade_key_trades_but_cannot_withdraw():
    """trade does not imply withdraw."""
    client, _ = signed_client(permissions=("trade",))

    assert client.post("/test/trade", json={}).status_code == 201
    assert_error(client.post("/test/withdraw", json={}), 403, "API_KEY_PERMISSION_DENIED")


def test_a_withdraw_key_withdraws():
    """A withdraw key (which must have an IP allowlist) reaches a withdraw view from an allowed address."""
    client, _ = signed_client(permissions=("withdraw",), ip_allowlist=["127.0.0.1"])
    assert client.post("/test/withdraw", json={}).status_code == 201


def test_views_that_declare_nothing_accept_keys_for_reading_only():
    """Fail closed: a write to a view that does not name a key permission is refused for every key."""
    client, _ = signed_client(permissions=("read", "trade", "withdraw"), ip_allowlist=["127.0.0.0/16"])

    assert client.get("/test/undeclared").status_code == 200
    assert_error(client.post("/test/undeclared", json={}), 403, "API_KEY_PERMISSION_DENIED")


def test_session_users_have_every_permission():
    """Key permissions never restrict a session: its user may trade, withdraw and write undeclared views."""
    session = APIClient()
    session.force_login(UserFactory())

    assert session.post("/test/trade", {}, format="json").status_code == 201
    assert session.post("/test/withdraw", {}, format="json").status_code == 201
    assert session.post("/test/undeclared", {}, format="json").status_code == 201


def test_key_management_refuses_api_keys_entirely():
    """Even a key with every permission cannot list, create or revoke keys."""
    client, api_key = signed_client(permissions=("read", "trade", "withdraw"), ip_allowlist=["127.0.0.1"])

    assert_error(client.get("/api/v1/api-keys"), 403, "API_KEY_NOT_ALLOWED")
    created = client.post("/api/v1/api-keys", json={"label": "minted", "permissions": ["withdraw"]})
    assert_error(created, 403, "API_KEY_NOT_ALLOWED")
    assert_error(client.delete(f"/api/v1/api-keys/{api_key.key_id}"), 403, "API_KEY_NOT_ALLOWED")
    assert ApiKey.objects.filter(user=api_key.user).count() == 1
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is None


# --- IP allowlist --------------------------------------------------------------


def test_ip_allowlist_allows_listed_addresses_and_networks_only():
    """REMOTE_ADDR inside a listed network or equal to a listed address passes (IPv4-mapped IPv6 as IPv4); others get
    IP_NOT_ALLOWED.
    """
    api_key, secret = api_key_for(ip_allowlist=["203.0.113.0/24", "2001:db8::1"])

    for address in ("203.0.113.7", "2001:db8::1", "::ffff:203.0.113.9"):
        assert SignedClient(api_key.key_id, secret, REMOTE_ADDR=address).get("/test/echo").status_code == 200, address
    for address in ("198.51.100.7", "2001:db8::2"):
        refused = SignedClient(api_key.key_id, secret, REMOTE_ADDR=address).get("/test/echo")
        assert_error(refused, 401, "IP_NOT_ALLOWED")


def test_forwarded_for_is_ignored_unless_proxies_are_configured(settings):
    """X-Forwarded-For is the client's to write; only NUM_PROXIES trusted proxies make it count."""
    api_key, secret = api_key_for(ip_allowlist=["203.0.113.7"])
    spoofing = SignedClient(api_key.key_id, secret, REMOTE_ADDR="198.51.100.1")

    assert_error(spoofing.get("/test/echo", headers={"X-Forwarded-For": "203.0.113.7"}), 401, "IP_NOT_ALLOWED")

    settings.NUM_PROXIES = 1  # now REMOTE_ADDR is our proxy, which appended the client's address
    via_proxy = spoofing.get("/test/echo", headers={"X-Forwarded-For": "10.9.9.9, 203.0.113.7"})
    assert via_proxy.status_code == 200
    spoofed = spoofing.get("/test/echo", headers={"X-Forwarded-For": "203.0.113.7, 10.9.9.9"})
    assert_error(spoofed, 401, "IP_NOT_ALLOWED")


# --- storage -------------------------------------------------------------------


def test_secret_is_stored_encrypted_never_in_clear():
    """The raw database column holds a Fernet token that decrypts to the secret, not the secret."""
    api_key, secret = api_key_for()

    with connection.cursor() as cursor:
        cursor.execute("SELECT secret_encrypted FROM exchange_apikey WHERE key_id = %s", [api_key.key_id])
        (stored,) = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM exchange_apikey WHERE exchange_apikey::text LIKE %s", [f"%{secret}%"])
        (rows_with_secret,) = cursor.fetchone()

    assert secret not in stored and rows_with_secret == 0
    assert stored.startswith("gAAAAA")  # Fernet version byte, base64
    assert secret_decrypt(stored) == secret
    assert len(api_key.key_id) >= 32 and len(secret) >= 64


def test_encryption_key_rotation_keeps_old_keys_working(settings):
    """MultiFernet: a new key first still verifies secrets made under the old one; re-encryption moves them."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.API_KEY_ENCRYPTION_KEYS = [old]
    api_key, secret = api_key_for()
    client = SignedClient(api_key.key_id, secret)

    settings.API_KEY_ENCRYPTION_KEYS = [new, old]
    assert client.get("/test/echo").status_code == 200

    call_command("api_keys_reencrypt", stdout=open("/dev/null", "w"))
    settings.API_KEY_ENCRYPTION_KEYS = [new]
    assert client.get("/test/echo").status_code == 200
    assert Fernet(new.encode()).decrypt(ApiKey.objects.get(pk=api_key.pk).secret_encrypted.encode()).decode() == secret

    settings.API_KEY_ENCRYPTION_KEYS = [old]  # the operator dropped the wrong key
    assert_error(client.get("/test/echo"), 503, "SERVICE_UNAVAILABLE")


def test_last_used_at_is_written_at_most_once_a_minute(django_assert_num_queries):
    """The first use is recorded; a second use within the minute costs no query at all (the key
    comes from this process's cache, and no UPDATE); after a minute it is recorded again."""
    client, api_key = signed_client()

    assert client.get("/test/echo").status_code == 200
    first_use = ApiKey.objects.get(pk=api_key.pk).last_used_at
    assert first_use is not None

    with django_assert_num_queries(0):
        assert client.get("/test/echo").status_code == 200
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at == first_use

    ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=first_use - timedelta(minutes=2))
    localcache.reset()  # as a process that reads the key afresh, two minutes later
    assert client.get("/test/echo").status_code == 200
    assert ApiKey.objects.get(pk=api_key.pk).last_used_at > first_use


def test_redis_down_makes_signed_requests_503(redis_down):
    """The replay check cannot be made: refuse with 503 rather than accept a possible replay."""
    client, _ = signed_client()
    response = client.get("/test/echo")
    assert_error(response, 503, "SERVICE_UNAVAILABLE")
    assert response["Retry-After"] == "1"


# --- checks, admin, schema -------------------------------------------------------


def test_system_check_flags_views_that_accept_keys_without_checking_their_permissions():
    """exchange.E001 finds views that accept keys but dropped ApiKeyPermission (public AllowAny views excepted)."""
    from django.urls import path
    from rest_framework.permissions import AllowAny, IsAuthenticated
    from rest_framework.views import APIView

    from exchange.apikeys.checks import views_missing_api_key_permission
    from exchange.apikeys.permissions import ApiKeyPermission

    class Forgetful(APIView):
        permission_classes = [IsAuthenticated]

    class Careful(APIView):
        permission_classes = [IsAuthenticated, ApiKeyPermission]

    class Public(APIView):
        permission_classes = [AllowAny]

    patterns = [path("a", Forgetful.as_view()), path("b", Careful.as_view()), path("c", Public.as_view())]
    assert views_missing_api_key_permission(patterns) == [("a", Forgetful)]
    call_command("check", "--fail-level", "ERROR")  # the project's own views all pass


def test_admin_lists_keys_without_secrets_and_revokes(admin_client):
    """Operators see keys read-only, never the secret or its ciphertext, cannot add keys, and the revoke action
    revokes.
    """
    api_key, secret = api_key_for()

    listing = admin_client.get("/admin/exchange/apikey/")
    assert listing.status_code == 200
    assert api_key.key_id in listing.content.decode() and secret not in listing.content.decode()
    detail = admin_client.get(f"/admin/exchange/apikey/{api_key.pk}/change/")
    assert detail.status_code == 200
    assert secret not in detail.content.decode() and api_key.secret_encrypted not in detail.content.decode()
    assert admin_client.get("/admin/exchange/apikey/add/").status_code == 403

    admin_client.post("/admin/exchange/apikey/", {"action": "revoke", "_selected_action": [api_key.pk]})
    assert ApiKey.objects.get(pk=api_key.pk).revoked_at is not None


def test_openapi_documents_the_signature_headers_and_the_new_endpoints():
    """The schema has the four headers as one security requirement and every new endpoint."""
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    schemes = schema["components"]["securitySchemes"]
    assert {schemes[name]["name"] for name in ("ApiKey", "ApiTimestamp", "ApiRecvWindow", "ApiSignature")} == {
        "X-API-KEY", "X-TIMESTAMP", "X-RECV-WINDOW", "X-SIGNATURE",
    }
    me = schema["paths"]["/api/v1/auth/me"]["get"]
    assert {"ApiKey": [], "ApiTimestamp": [], "ApiRecvWindow": [], "ApiSignature": []} in me["security"]
    for path in ("/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/auth/logout", "/api/v1/auth/csrf",
                 "/api/v1/api-keys", "/api/v1/api-keys/{key_id}"):
        assert path in schema["paths"], path


@pytest.mark.parametrize(
    "fields, code",
    [({"permissions": ["admin"]}, "INVALID_PERMISSION"), ({"label": "  "}, "INVALID_LABEL"), ({"label": "x" * 65}, "INVALID_LABEL")],
)
def test_service_validates_its_input_whoever_calls_it(fields, code):
    """The service checks permissions and label itself, not only the API serializer does."""
    from exchange.core.errors import ApplicationError

    with pytest.raises(ApplicationError) as error:
        api_key_create(user=UserFactory(), **{"label": "x", "permissions": ["read"], "ip_allowlist": [], **fields})
    assert error.value.code == code
