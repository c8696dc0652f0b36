"""The wallet API end to end over HTTP: own data only, exact decimal strings, stable error codes."""

from decimal import Decimal as D

import pytest

from tests.wallet.conftest import balances
from wallet.models import Hold, LedgerEntry, Withdrawal
from wallet.services import funds_hold, withdrawal_request

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory's: the step-up of a session's withdrawal


@pytest.fixture
def as_alice(api_client, alice):
    api_client.force_login(alice)
    return api_client


def test_everything_needs_a_login(api_client):
    """Every wallet endpoint refuses anonymous callers with the JSON error shape."""
    for path in ("/api/v1/balances", "/api/v1/ledger", "/api/v1/withdrawals", "/api/v1/deposits"):
        response = api_client.get(path)
        assert response.status_code == 401 and response.json()["code"] == "NOT_AUTHENTICATED", path


def test_balances_list_every_asset_with_exact_strings(as_alice, alice, bob, btc, usdt, fund):
    """Zero balances are listed too; another user's money never shows."""
    fund(alice, btc, "1.5")
    funds_hold(user=alice, asset=btc, amount=D("0.25"), reference="order:1")
    fund(bob, usdt, "1000")

    response = as_alice.get("/api/v1/balances")

    assert response.status_code == 200
    assert response.json() == [
        {"asset": "BTC", "available": "1.25", "held": "0.25", "total": "1.5"},
        {"asset": "USDT", "available": "0", "held": "0", "total": "0"},
    ]


def test_ledger_shows_own_entries_newest_first_with_filters_and_cursor(as_alice, alice, bob, btc, usdt, fund):
    """Only the caller's entries, newest first; each filter narrows them; the cursor pages through all of them."""
    fund(alice, btc, "1")
    fund(alice, usdt, "100")
    fund(bob, btc, "5")
    funds_hold(user=alice, asset=btc, amount=D("0.1"), reference="order:1")

    page = as_alice.get("/api/v1/ledger").json()

    own = LedgerEntry.objects.filter(account__user=alice).order_by("-id")
    assert [row["id"] for row in page["results"]] == [e.pk for e in own]
    assert page["results"][0] == {
        "id": own[0].pk, "time": page["results"][0]["time"], "asset": "BTC", "account_kind": "HELD",
        "amount": "0.1", "kind": "HOLD", "reference": "order:1",
    }
    assert page["next"] is None

    assert [r["amount"] for r in as_alice.get("/api/v1/ledger", {"asset": "usdt"}).json()["results"]] == ["100"]
    deposits = as_alice.get("/api/v1/ledger", {"kind": "DEPOSIT"}).json()["results"]
    assert [(r["asset"], r["amount"]) for r in deposits] == [("USDT", "100"), ("BTC", "1")]
    held = as_alice.get("/api/v1/ledger", {"account_kind": "HELD"}).json()["results"]
    assert [r["amount"] for r in held] == ["0.1"]
    assert as_alice.get("/api/v1/ledger", {"end_time": "2000-01-01T00:00:00Z"}).json()["results"] == []

    first = as_alice.get("/api/v1/ledger", {"limit": 2}).json()
    second = as_alice.get(first["next"]).json()
    assert [r["id"] for r in first["results"] + second["results"]] == [e.pk for e in own]


def test_ledger_bad_filters_are_400s(as_alice):
    """Bad filter values and a forged cursor are 400s naming the field, not 500s or 404s."""
    for params, field in (({"kind": "GIFT"}, "kind"), ({"start_time": "yesterday"}, "start_time")):
        response = as_alice.get("/api/v1/ledger", params)
        assert response.status_code == 400 and response.json()["field"] == field
    response = as_alice.get("/api/v1/ledger", {"cursor": "garbage"})
    assert (response.status_code, response.json()["code"]) == (400, "INVALID_CURSOR")


def test_withdrawal_request_holds_funds_and_lists(as_alice, alice, btc, fund):
    """A withdrawal request holds its amount at once and appears in the caller's list."""
    fund(alice, btc, "1")

    response = as_alice.post("/api/v1/withdrawals", {"asset": "btc", "amount": "0.25", "address": "bc1qexample",
                                                     "password": PASSWORD}, format="json")

    assert response.status_code == 201
    body = response.json()
    assert {k: body[k] for k in ("asset", "amount", "address", "status", "txid")} == {
        "asset": "BTC", "amount": "0.25", "address": "bc1qexample", "status": "REQUESTED", "txid": ""}
    assert balances(alice, btc) == (D("0.75"), D("0.25"))
    listed = as_alice.get("/api/v1/withdrawals").json()["results"]
    assert [w["id"] for w in listed] == [body["id"]]
    assert as_alice.get("/api/v1/withdrawals", {"status": "COMPLETED"}).json()["results"] == []


@pytest.mark.parametrize(
    "payload, status, code, field",
    [
        ({"asset": "BTC", "amount": "0.123456789", "address": "bc1q"}, 400, "INVALID_PRECISION", "amount"),
        ({"asset": "BTC", "amount": "0", "address": "bc1q"}, 400, "MUST_BE_POSITIVE", "amount"),
        ({"asset": "BTC", "amount": "-1", "address": "bc1q"}, 400, "MUST_BE_POSITIVE", "amount"),
        ({"asset": "BTC", "amount": 0.123456789, "address": "bc1q"}, 400, "INVALID_PRECISION", "amount"),
        ({"asset": "BTC", "amount": "1e-9", "address": "bc1q"}, 400, "INVALID_PRECISION", "amount"),
        ({"asset": "BTC", "amount": "NaN", "address": "bc1q"}, 400, "INVALID_AMOUNT", "amount"),
        ({"asset": "BTC", "amount": "9" * 30, "address": "bc1q"}, 400, "AMOUNT_TOO_LARGE", "amount"),
        ({"asset": "DOGE", "amount": "1", "address": "bc1q"}, 400, "UNKNOWN_ASSET", "asset"),
        ({"asset": "BTC", "amount": "1.5", "address": "bc1q"}, 400, "INSUFFICIENT_FUNDS", None),
        ({"asset": "BTC", "amount": "0.1", "address": "bc1q x"}, 400, "INVALID", "address"),
        ({"asset": "BTC", "amount": "0.1"}, 400, "REQUIRED", "address"),
    ],
)
def test_withdrawal_request_errors_are_4xx_with_stable_codes_and_write_nothing(
    as_alice, alice, btc, fund, payload, status, code, field
):
    """Each kind of bad request gets its stable code and field, and leaves no withdrawal, hold or balance change."""
    fund(alice, btc, "1")

    response = as_alice.post("/api/v1/withdrawals", {**payload, "password": PASSWORD}, format="json")

    assert response.status_code == status
    assert (response.json()["code"], response.json()["field"]) == (code, field)
    assert not Withdrawal.objects.exists() and not Hold.objects.exists()
    assert balances(alice, btc) == (D("1"), D("0"))


def test_malformed_json_is_a_400(as_alice):
    """A body that is not JSON is a 400 MALFORMED_REQUEST."""
    response = as_alice.post("/api/v1/withdrawals", "{not json", content_type="application/json")
    assert (response.status_code, response.json()["code"]) == (400, "MALFORMED_REQUEST")


def test_users_only_see_their_own_withdrawals_and_deposits(as_alice, alice, bob, btc, fund):
    """Another user's withdrawals and deposits never appear in the caller's lists."""
    fund(alice, btc, "1")
    fund(bob, btc, "1")
    withdrawal_request(user=bob, asset=btc, amount=D("0.5"), address="bc1qbob")

    assert as_alice.get("/api/v1/withdrawals").json()["results"] == []
    deposits = as_alice.get("/api/v1/deposits").json()["results"]
    assert [(d["asset"], d["amount"], d["source"]) for d in deposits] == [("BTC", "1", "OPERATOR")]


def test_the_wallet_endpoints_are_in_the_openapi_schema(api_client):
    """Every wallet endpoint is documented in the OpenAPI schema."""
    paths = api_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()["paths"]
    for path in ("/api/v1/balances", "/api/v1/ledger", "/api/v1/withdrawals", "/api/v1/deposits",
                 "/api/v1/custody/deposits"):
        assert path in paths
    assert set(paths["/api/v1/withdrawals"]) >= {"get", "post"}


def test_withdrawals_need_a_key_with_the_withdraw_permission(alice, btc, fund):
    """A trade-only key can read withdrawals but not request one; a withdraw key can."""
    from tests.factories import api_key_for
    from tests.signed_client import SignedClient

    fund(alice, btc, "1")
    body = {"asset": "BTC", "amount": "0.1", "address": "bc1qexampleaddress000000000000000000000"}
    trade_key, trade_secret = api_key_for(alice, permissions=("read", "trade"))
    trade_client = SignedClient(trade_key.key_id, trade_secret)
    assert trade_client.get("/api/v1/withdrawals").status_code == 200
    refused = trade_client.post("/api/v1/withdrawals", json=body)
    assert (refused.status_code, refused.json()["code"]) == (403, "API_KEY_PERMISSION_DENIED")

    withdraw_key, withdraw_secret = api_key_for(alice, permissions=("read", "withdraw"), ip_allowlist=["127.0.0.1"])
    accepted = SignedClient(withdraw_key.key_id, withdraw_secret).post("/api/v1/withdrawals", json=body)
    assert accepted.status_code == 201, accepted.json()
