"""Fixtures for the trading API: the matcher's market, funded traders, HTTP clients.

The market, the traders (alice, bob, carol, each funded with 1,000,000 USDT
and 100 BTC through deposits) and the in-process matcher are those of
tests/matching: API tests commit for real, placement enqueues on commit, and
``drain(matcher)`` applies what was enqueued, as the market's process would.
"""

from __future__ import annotations

import json as jsonlib
import time
from decimal import Decimal as D
from urllib.parse import urlencode

import pytest
from rest_framework.test import APIClient

from matching import stream
from orders.models import Order
from tests.factories import api_key_for
from tests.matching.conftest import drain, fund, market, matcher, traders  # noqa: F401 (fixtures and helpers)
from tests.signed_client import SignedClient
from wallet.invariants import ledger_violations
from wallet.models import Hold, LedgerEntry

ORDERS = "/api/v1/orders"


class SessionClient:
    """A client signed in as ``user`` with a session (the trading page), with
    the interface of SignedClient: ``json=`` bodies, ``query=`` parameters, or
    raw ``body=`` bytes with any ``content_type``."""

    def __init__(self, user):
        self.client = APIClient(raise_request_exception=False)
        self.client.force_login(user)

    def request(self, method: str, path: str, *, query=None, json=None, body: bytes | None = None,
                content_type: str = "application/json"):
        if body is None:
            body = jsonlib.dumps(json).encode() if json is not None else b""
        url = path + ("?" + urlencode(query, doseq=True) if query else "")
        return self.client.generic(method, url, body, content_type=content_type)

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json=None, **kwargs):
        return self.request("POST", path, json=json, **kwargs)

    def patch(self, path: str, json=None, **kwargs):
        return self.request("PATCH", path, json=json, **kwargs)

    def delete(self, path: str, **kwargs):
        return self.request("DELETE", path, **kwargs)


def session_client(user) -> SessionClient:
    return SessionClient(user)


class Bot(SignedClient):
    """A SignedClient with PATCH, that never signs two requests in the same
    millisecond (the server would refuse the second as a replay)."""

    _last_ms = 0

    def request(self, method, path, **kwargs):
        while time.time_ns() // 1_000_000 <= Bot._last_ms:
            time.sleep(0.0005)
        Bot._last_ms = time.time_ns() // 1_000_000
        return super().request(method, path, **kwargs)

    def patch(self, path: str, json=None, **kwargs):
        return self.request("PATCH", path, json=json, **kwargs)


def bot_for(user, permissions=("read", "trade")) -> Bot:
    """A client signing every request with a new API key of ``user``."""
    api_key, secret = api_key_for(user, permissions=permissions)
    return Bot(api_key.key_id, secret, client=APIClient(raise_request_exception=False))


def balance(client, asset: str) -> tuple[D, D]:
    """(available, held) of ``asset``, as GET /api/v1/balances shows them."""
    response = client.get("/api/v1/balances")
    assert response.status_code == 200, response.content
    row = next(row for row in response.json() if row["asset"] == asset)
    return D(row["available"]), D(row["held"])


def writes(symbol: str = "BTC-USDT") -> tuple[int, int, int, int]:
    """Rows that placing, cancelling or amending could write, and the market's
    command stream length: (orders, holds, ledger entries, XLEN)."""
    from exchange.core.redis import get_redis
    from orders.models import OrderAmendment

    return (
        Order.objects.count() + OrderAmendment.objects.count(),
        Hold.objects.count(),
        LedgerEntry.objects.count(),
        get_redis().xlen(stream.stream_key(symbol)),
    )


def heartbeat(symbol: str = "BTC-USDT") -> None:
    """Make the market's matcher look alive, without running one."""
    stream.heartbeat_write(symbol, sequence=0, pid=0, backlog=0)


@pytest.fixture
def sound_ledger(traders):
    """After the test, every ledger invariant holds, including that each
    order holds exactly what it still needs (orders/invariants.py)."""
    yield
    assert ledger_violations() == []
