"""The web tier as it runs: several uvicorn workers on one port (exchange/server.py).

Each worker caches markets and API keys (exchange/core/localcache.py); these
tests prove a change reaches every worker within a second, and that the
client's address cannot be forged with X-Forwarded-For.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from exchange.apikeys.services import api_key_create, api_key_revoke
from exchange.apikeys.signing import signed_headers
from exchange.demo import demo_load
from exchange.models import Market
from matching.models import MarketStatusChange
from matching.services import market_status_request
from tests.e2e.harness import Stack, running_stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ORDER = {"market": "BTC-USDT", "side": "BUY", "type": "LIMIT", "price": "60000", "quantity": "0.001"}
# Each request opens a new connection, and the kernel spreads connections over the
# workers by their source port: after this many, every worker has seen some.
REQUESTS = 40


def _send(base_url: str, key_id: str, secret: str, method: str, path: str, body=None,
          headers: dict | None = None) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else b""
    signed = {**signed_headers(key_id, secret, method, path, None, data), "Content-Type": "application/json",
              **(headers or {})}
    request = urllib.request.Request(base_url + path, data=data or None, method=method, headers=signed)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _codes(results) -> set:
    return {(status, body.get("code") if isinstance(body, dict) else None) for status, body in results}


@pytest.fixture
def stack(redis_app):
    demo_load(password="e2e-password-123")
    # Refused requests count as failed authentications: this test makes many on purpose.
    with running_stack(THROTTLE_RATE_AUTH_FAILURES="100000/s") as running:
        yield running


def _trader_key(username="alice", ip_allowlist=()):
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.get(username=username)
    key, secret = api_key_create(user=user, label="e2e", permissions=["read", "trade"], ip_allowlist=ip_allowlist)
    return user, key, secret


def test_every_worker_refuses_a_revoked_key_and_a_halted_market_within_a_second(stack):
    """Both doors of every worker (the fast path for placements, Django for reads) cache the key
    and the market; a revocation, then a halt applied by the matcher, are refused everywhere one
    second later, however warm the caches were."""
    user, key, secret = _trader_key(ip_allowlist=[])
    warm = [_send(stack.base_url, key.key_id, secret, "POST", "/api/v1/orders", ORDER) for _ in range(REQUESTS)]
    warm += [_send(stack.base_url, key.key_id, secret, "GET", "/api/v1/orders") for _ in range(REQUESTS)]
    assert {status for status, _ in warm} <= {200, 201}, _codes(warm)

    api_key_revoke(user=user, key_id=key.key_id)
    time.sleep(1.0)
    refused = [_send(stack.base_url, key.key_id, secret, "POST", "/api/v1/orders", ORDER) for _ in range(REQUESTS)]
    refused += [_send(stack.base_url, key.key_id, secret, "GET", "/api/v1/orders") for _ in range(REQUESTS)]
    assert _codes(refused) == {(401, "API_KEY_REVOKED")}

    _, key, secret = _trader_key()
    assert _send(stack.base_url, key.key_id, secret, "POST", "/api/v1/orders", ORDER)[0] == 201
    change = market_status_request(market=Market.objects.get(symbol="BTC-USDT"), new_status="HALTED",
                                   actor=None, reason="e2e: halt")
    wait_for(lambda: MarketStatusChange.objects.get(pk=change.pk).status == "APPLIED", timeout_s=15,
             what="the matcher to apply the halt")
    time.sleep(1.0)
    halted = [_send(stack.base_url, key.key_id, secret, "POST", "/api/v1/orders", ORDER) for _ in range(REQUESTS)]
    assert _codes(halted) == {(409, "MARKET_HALTED")}


def test_x_forwarded_for_counts_only_through_num_proxies(redis_app):
    """A key limited to 203.0.113.0/24, used from 127.0.0.1 with "X-Forwarded-For: 203.0.113.7":
    refused on both doors when no proxy is trusted (the default: the header is the client's own
    writing); accepted once the operator says one proxy appends to it (NUM_PROXIES=1)."""
    demo_load(password="e2e-password-123")
    _, key, secret = _trader_key(ip_allowlist=["203.0.113.0/24"])
    forged = {"X-Forwarded-For": "203.0.113.7"}
    for num_proxies, expected in (("0", {(401, "IP_NOT_ALLOWED")}), ("1", None)):
        stack = Stack(NUM_PROXIES=num_proxies)
        stack.start_web()
        try:
            stack.wait_ready()
            results = [_send(stack.base_url, key.key_id, secret, "POST", "/api/v1/orders", ORDER, forged),
                       _send(stack.base_url, key.key_id, secret, "GET", "/api/v1/orders", None, forged)]
            if expected is not None:
                assert _codes(results) == expected
            else:
                # Past authentication: the placement meets the market's state (no matcher runs here).
                assert (401, "IP_NOT_ALLOWED") not in _codes(results), results
                assert results[1][0] == 200
        finally:
            stack.stop()
