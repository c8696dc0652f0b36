"""POST /api/v1/custody/deposits: HMAC-signed, fresh, idempotent on txid, JSON errors with stable codes."""

import json
import time
from decimal import Decimal as D

import pytest

from tests.wallet.conftest import balances
from wallet.custody import custody_signature
from wallet.models import Deposit

pytestmark = pytest.mark.django_db

SECRET = "test-custody-secret-0123456789"
URL = "/api/v1/custody/deposits"


@pytest.fixture(autouse=True)
def secret(settings):
    settings.CUSTODY_WEBHOOK_SECRET = SECRET


def post(client, payload, *, secret=SECRET, timestamp=None, signature=None, raw: bytes | None = None, age_s=0):
    """Deliver ``payload`` (or ``raw`` bytes) as the custody system would, signed ``age_s`` seconds ago."""
    body = raw if raw is not None else json.dumps(payload).encode()
    timestamp = str(int(time.time()) - age_s) if timestamp is None else timestamp
    signature = custody_signature(secret=secret, timestamp=timestamp, body=body) if signature is None else signature
    return client.generic(
        "POST", URL, body, content_type="application/json",
        HTTP_X_CUSTODY_TIMESTAMP=timestamp, HTTP_X_CUSTODY_SIGNATURE=signature,
    )


def deposit_for(user, **overrides):
    return {"user_id": user.pk, "asset": "BTC", "amount": "0.5", "txid": "0xfeed", "memo": "block 840000", **overrides}


def test_a_signed_deposit_is_credited_once(client, alice, btc):
    """The first delivery credits (201); a retry of the same txid returns the same deposit (200)."""
    first = post(client, deposit_for(alice))

    assert first.status_code == 201
    body = first.json()
    assert {k: body[k] for k in ("user_id", "asset", "amount", "source", "txid")} == {
        "user_id": alice.pk, "asset": "BTC", "amount": "0.5", "source": "CUSTODY", "txid": "0xfeed"}
    assert balances(alice, btc) == (D("0.5"), D("0"))

    again = post(client, deposit_for(alice))

    assert again.status_code == 200 and again.json()["id"] == body["id"]
    assert balances(alice, btc) == (D("0.5"), D("0")) and Deposit.objects.count() == 1


def test_a_txid_replayed_with_other_details_is_a_conflict(client, alice, bob, btc):
    """The same txid for another user is a 409 and credits nobody."""
    post(client, deposit_for(alice))

    response = post(client, deposit_for(bob))

    assert (response.status_code, response.json()["code"]) == (409, "DEPOSIT_CONFLICT")
    assert balances(bob, btc) == (D("0"), D("0"))


@pytest.mark.parametrize(
    "kwargs, status, code",
    [
        (dict(secret="wrong-secret"), 401, "SIGNATURE_INVALID"),
        (dict(signature="00" * 32), 401, "SIGNATURE_INVALID"),
        (dict(signature="é"), 401, "SIGNATURE_INVALID"),
        (dict(signature=""), 401, "SIGNATURE_MISSING"),
        (dict(timestamp="yesterday"), 401, "TIMESTAMP_INVALID"),
        (dict(age_s=330), 401, "TIMESTAMP_STALE"),
        (dict(age_s=-330), 401, "TIMESTAMP_STALE"),
    ],
)
def test_unsigned_forged_or_stale_requests_are_refused(client, alice, btc, kwargs, status, code):
    """A wrong key, a forged or non-hex signature, missing headers, a bad or stale timestamp: 401, nothing credited."""
    response = post(client, deposit_for(alice), **kwargs)

    assert (response.status_code, response.json()["code"]) == (status, code)
    assert not Deposit.objects.exists()


def test_the_signature_covers_the_body(client, alice, btc):
    """A body changed after signing (a bigger amount) fails the signature check."""
    timestamp = str(int(time.time()))
    signed = json.dumps(deposit_for(alice)).encode()
    tampered = json.dumps(deposit_for(alice, amount="500")).encode()

    response = post(client, None, raw=tampered, timestamp=timestamp,
                    signature=custody_signature(secret=SECRET, timestamp=timestamp, body=signed))

    assert response.json()["code"] == "SIGNATURE_INVALID"


def test_disabled_without_a_secret(client, alice, settings):
    """Without a configured secret the endpoint refuses everything with 503."""
    settings.CUSTODY_WEBHOOK_SECRET = ""

    response = post(client, deposit_for(alice), secret="anything")

    assert (response.status_code, response.json()["code"]) == (503, "CUSTODY_WEBHOOK_DISABLED")


@pytest.mark.parametrize(
    "payload, code, field",
    [
        ({"asset": "BTC", "amount": "0.5", "txid": "0x1"}, "REQUIRED", "user_id"),
        ({"user_id": 10**9, "asset": "BTC", "amount": "0.5", "txid": "0x1"}, "UNKNOWN_USER", "user_id"),
        ({"asset": "DOGE"}, "UNKNOWN_ASSET", "asset"),
        ({"amount": "0.000000001"}, "INVALID_PRECISION", "amount"),
        ({"amount": "-1"}, "MUST_BE_POSITIVE", "amount"),
    ],
)
def test_signed_but_invalid_deposits_are_400s(client, alice, btc, payload, code, field):
    """A correctly signed request with bad content is a 400 naming the field; nothing is credited."""
    body = payload if "user_id" in payload or code == "REQUIRED" else deposit_for(alice, **payload)

    response = post(client, body)

    assert (response.status_code, response.json()["code"], response.json()["field"]) == (400, code, field)
    assert not Deposit.objects.exists()


def test_malformed_json_is_a_400(client, btc):
    """A body that is not JSON is a 400 MALFORMED_REQUEST."""
    response = post(client, None, raw=b"{not json")
    assert (response.status_code, response.json()["code"]) == (400, "MALFORMED_REQUEST")
