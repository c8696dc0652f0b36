"""Rate limits in Redis through HTTP: per API key, per user, per IP, per scope; 429 and 503."""

import time

import pytest
from django.core.exceptions import ImproperlyConfigured
from rest_framework.test import APIClient

from exchange.core.throttling import parse_rate, sliding_window_hit
from tests.factories import UserFactory, api_key_for
from tests.signed_client import SignedClient

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.exchange.apikeys_urls")]

UNLIMITED = "100000/s"


@pytest.fixture
def rates(settings, redis_app):
    """Set throttle rates for this test (unnamed scopes stay unlimited), on an empty Redis."""

    def set_rates(**overrides):
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {
                "anon": UNLIMITED, "user": UNLIMITED, "orders": UNLIMITED, "auth": UNLIMITED, **overrides,
            },
        }

    return set_rates


def session_for(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def assert_rate_limited(response, period_s: int):
    assert response.status_code == 429, response.content
    assert response.json()["code"] == "RATE_LIMITED"
    assert 1 <= int(response["Retry-After"]) <= period_s


def test_user_rate_applies_per_user_and_another_user_is_not_affected(rates):
    """After N requests a session user gets 429 with Retry-After; another user still gets through."""
    rates(user="3/m")
    alice, bob = session_for(UserFactory()), session_for(UserFactory())

    assert [alice.get("/api/v1/auth/me").status_code for _ in range(3)] == [200, 200, 200]
    assert_rate_limited(alice.get("/api/v1/auth/me"), 60)
    assert bob.get("/api/v1/auth/me").status_code == 200


def test_each_api_key_has_its_own_allowance(rates):
    """Exhausting one key's allowance leaves another key of the same user untouched."""
    rates(user="2/m")
    user = UserFactory()
    first, first_secret = api_key_for(user)
    second, second_secret = api_key_for(user)
    first_client, second_client = SignedClient(first.key_id, first_secret), SignedClient(second.key_id, second_secret)

    assert [first_client.get("/test/echo").status_code for _ in range(2)] == [200, 200]
    assert_rate_limited(first_client.get("/test/echo"), 60)
    assert second_client.get("/test/echo").status_code == 200


def test_anonymous_requests_are_limited_per_ip(rates):
    """Anonymous requests are counted per REMOTE_ADDR."""
    rates(anon="2/m")
    here, elsewhere = APIClient(REMOTE_ADDR="203.0.113.1"), APIClient(REMOTE_ADDR="203.0.113.2")

    assert [here.get("/api/v1/markets").status_code for _ in range(2)] == [200, 200]
    assert_rate_limited(here.get("/api/v1/markets"), 60)
    assert elsewhere.get("/api/v1/markets").status_code == 200


def test_a_scope_declared_by_a_view_limits_that_view_only(rates):
    """`throttle_scope = "orders"`: placing is limited at the orders rate, reading is not."""
    rates(orders="2/s")
    api_key, secret = api_key_for(permissions=("trade",))
    client = SignedClient(api_key.key_id, secret)

    assert [client.post("/test/trade", json={}).status_code for _ in range(2)] == [201, 201]
    assert_rate_limited(client.post("/test/trade", json={}), 1)
    assert client.get("/test/echo").status_code == 200


def test_login_attempts_are_limited_per_ip_even_with_the_right_password(rates):
    """Brute-force protection: the auth scope counts every attempt from an address."""
    rates(auth="3/m")
    UserFactory(username="bob", password="correct-horse-battery")
    attacker, other = APIClient(REMOTE_ADDR="198.51.100.9"), APIClient(REMOTE_ADDR="198.51.100.10")

    for _ in range(3):
        wrong = attacker.post("/api/v1/auth/login", {"username": "bob", "password": "guess"}, format="json")
        assert wrong.json()["code"] == "INVALID_CREDENTIALS"
    right = {"username": "bob", "password": "correct-horse-battery"}
    assert_rate_limited(attacker.post("/api/v1/auth/login", right, format="json"), 60)
    assert other.post("/api/v1/auth/login", right, format="json").status_code == 200


def test_failed_key_authentications_are_limited_per_ip_and_per_key_id(rates):
    """Authentication runs before throttles, so failures must be limited on their own: after N
    failed signatures from one address, every signed request from it is refused with 429, even a
    correctly signed one (guessing is stopped, and success no longer tells anything); other
    addresses are unaffected. A key id that keeps failing is refused from any address."""
    rates(auth_failures="3/m")
    api_key, secret = api_key_for()
    attacker = SignedClient(api_key.key_id, "wrong-secret", REMOTE_ADDR="198.51.100.7")
    honest = SignedClient(api_key.key_id, secret, REMOTE_ADDR="198.51.100.7")

    assert [attacker.get("/test/echo").json()["code"] for _ in range(3)] == ["INVALID_SIGNATURE"] * 3
    assert_rate_limited(attacker.get("/test/echo"), 60)
    assert_rate_limited(honest.get("/test/echo"), 60)
    elsewhere = SignedClient(api_key.key_id, secret, REMOTE_ADDR="198.51.100.8")
    assert_rate_limited(elsewhere.get("/test/echo"), 60), "the key id failed too often as well"

    other_key, other_secret = api_key_for()
    assert SignedClient(other_key.key_id, other_secret, REMOTE_ADDR="198.51.100.8").get("/test/echo").status_code == 200
    unknown = SignedClient("no-such-key", "x", REMOTE_ADDR="203.0.113.50")
    assert [unknown.get("/test/echo").json()["code"] for _ in range(3)] == ["INVALID_API_KEY"] * 3
    assert_rate_limited(unknown.get("/test/echo"), 60)


def test_the_window_slides(redis_app):
    """At most `limit` in any period: a slot frees exactly when the oldest request leaves the window."""
    assert sliding_window_hit("throttle:test", 2, 400) == (True, 0.0)
    assert sliding_window_hit("throttle:test", 2, 400)[0]
    refused, wait_s = sliding_window_hit("throttle:test", 2, 400)
    assert not refused and 0 < wait_s <= 0.4
    assert not sliding_window_hit("throttle:test", 2, 400)[0]  # refusals are not counted...
    time.sleep(wait_s + 0.02)
    assert sliding_window_hit("throttle:test", 2, 400)[0]  # ...so the slot is free after the wait
    assert redis_app.pttl("throttle:test") <= 400


def test_rates_are_validated():
    """DRF's rate syntax is accepted; zero, non-numbers and unknown periods are configuration errors."""
    assert parse_rate("100/s") == (100, 1000)
    assert parse_rate("10/min") == (10, 60_000)
    assert parse_rate("") is None and parse_rate(None) is None
    for bad in ("0/s", "ten/s", "5", "5/w"):
        with pytest.raises(ImproperlyConfigured):
            parse_rate(bad)


def test_an_empty_rate_disables_that_throttle(rates):
    """THROTTLE_RATE_ANON='' means no anonymous limit."""
    rates(anon="")
    client = APIClient()
    assert all(client.get("/api/v1/markets").status_code == 200 for _ in range(5))


def test_redis_down_is_503_not_unlimited(redis_down):
    """Throttles cannot count without Redis: the API refuses rather than serving without limits."""
    anonymous = APIClient().get("/api/v1/markets")
    assert anonymous.status_code == 503
    assert anonymous.json()["code"] == "SERVICE_UNAVAILABLE" and anonymous["Retry-After"] == "1"

    signed_in = session_for(UserFactory()).get("/api/v1/auth/me")
    assert signed_in.status_code == 503 and signed_in.json()["code"] == "SERVICE_UNAVAILABLE"
