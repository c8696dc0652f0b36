"""The API keeps the contract its OpenAPI schema states, found by schemathesis.

Every operation of /api/schema/ is called with requests schemathesis
generates from the schema (valid ones and, for the negative checks, invalid
ones), once signed in with a session and once signing each request with an
API key, and every check schemathesis has runs on each answer: no 5xx,
statuses, content types, headers and bodies as documented, invalid input
refused, valid input not refused for being malformed, and authentication not
ignored.

Schemathesis calls the Django application in process (WSGI), in the test's
transaction. Requests are signed by a small WSGI layer in front of Django:
schemathesis sends the key's id with a placeholder signature, and the layer
signs what is actually sent, byte for byte, as a client library would. A
request that arrives without the key's id (schemathesis removes credentials
to check they are required) is left unsigned.
"""

from __future__ import annotations

import io
import itertools
import secrets
import time

import pytest
import schemathesis
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest
from django.db import close_old_connections
from django.test import Client
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, settings as hypothesis_settings
from schemathesis.checks import CHECKS, load_all_checks

from exchange.apikeys.signing import (HEADER_API_KEY, HEADER_RECV_WINDOW, HEADER_SIGNATURE, HEADER_TIMESTAMP,
                                      canonical_request, sign)
from matching import stream
from tests.factories import MarketFactory, UserFactory, api_key_for

PLACEHOLDER = "signed-by-the-test-layer"
# Business refusals of well-formed requests: no funds, no such market,
# nothing to cancel, a feature off.
ACCEPTED_REFUSALS = ["2XX", "400", "401", "403", "404", "409", "503"]


def _environ_key(header: str) -> str:
    return "HTTP_" + header.upper().replace("-", "_")


class Credentials:
    """The caller of the running test (set by the ``caller`` fixture)."""

    mode: str = ""
    key_id: str = ""
    secret: str = ""
    session_id: str = ""
    csrf: str = ""


_unique = itertools.count()


class SigningLayer:
    """Signs requests that carry the placeholder signature, then calls Django."""

    def __init__(self):
        self.django = WSGIHandler()

    def __call__(self, environ, start_response):
        if environ.get(_environ_key(HEADER_SIGNATURE)) == PLACEHOLDER and Credentials.key_id:
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            path = WSGIRequest(dict(environ, **{"wsgi.input": io.BytesIO(b"")})).path
            # Each signature is unique (the server refuses a replay): the
            # receive window differs for requests signed in one millisecond.
            window = 5000 + next(_unique) % 50_000
            # The canonical request of what arrives (a generated path may hold a decoded "?",
            # which the client helper refuses in a path it is given).
            timestamp = time.time_ns() // 1_000_000
            canonical = canonical_request(timestamp_ms=timestamp, recv_window_ms=window,
                                          method=environ["REQUEST_METHOD"], path=path,
                                          query=environ.get("QUERY_STRING", ""), body=body)
            environ[_environ_key(HEADER_TIMESTAMP)] = str(timestamp)
            environ[_environ_key(HEADER_RECV_WINDOW)] = str(window)
            environ[_environ_key(HEADER_SIGNATURE)] = sign(Credentials.secret, canonical)
        return self.django(environ, start_response)


def _schema() -> dict:
    return SchemaGenerator().get_schema(request=None, public=True)


load_all_checks()
schema = schemathesis.openapi.from_dict(_schema(), config=schemathesis.Config.from_dict({
    "checks": {"positive_data_acceptance": {"expected-statuses": ACCEPTED_REFUSALS}},
}))
schema.app = SigningLayer()


@schema.auth(refresh_interval=None)
class TestCaller:
    """Puts the running test's credentials on each case schemathesis generates."""

    def get(self, case, context):
        return Credentials.mode

    def set(self, case, data, context):
        case.headers = dict(case.headers or {})
        if data == "key":
            case.headers.update({HEADER_API_KEY: Credentials.key_id, HEADER_SIGNATURE: PLACEHOLDER,
                                 HEADER_TIMESTAMP: "0"})
        else:
            case.cookies = {**(case.cookies or {}), "sessionid": Credentials.session_id,
                            "csrftoken": Credentials.csrf}
            case.headers["X-CSRFToken"] = Credentials.csrf


@pytest.fixture(params=["session", "key"])
def caller(request, db, settings, redis_app):
    """A trader with a market to trade on, signed in (session) or holding a read-and-trade key."""
    rates = {scope: "100000/s" for scope in settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    # As Django's test client does: the test's transaction holds the
    # connection, which the end of a request must not close.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    request.addfinalizer(lambda: signals.request_started.connect(close_old_connections))
    request.addfinalizer(lambda: signals.request_finished.connect(close_old_connections))
    settings.CUSTODY_WEBHOOK_SECRET = "contract-test-webhook-secret"  # the webhook as operators run it
    market = MarketFactory()
    # Its matcher alive, as operators run it (without one, placements are 503 MATCHER_UNAVAILABLE).
    stream.heartbeat_write(market.symbol, sequence=0, pid=0, backlog=0)
    user = UserFactory()
    Credentials.mode = request.param
    if request.param == "key":
        key, secret = api_key_for(user, permissions=("read", "trade"))
        Credentials.key_id, Credentials.secret = key.key_id, secret
    else:
        client = Client()
        client.force_login(user)
        Credentials.key_id = ""
        Credentials.session_id = client.cookies["sessionid"].value
        Credentials.csrf = secrets.token_hex(16)
    yield request.param
    Credentials.mode = Credentials.key_id = ""


@schema.parametrize()
@hypothesis_settings(max_examples=15, deadline=None, derandomize=True,
                     suppress_health_check=list(HealthCheck))
def test_api_keeps_its_contract(case, caller):
    case.call_and_validate(checks=CHECKS.get_all())
