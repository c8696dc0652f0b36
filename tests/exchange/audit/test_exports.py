"""Compliance exports: filtered CSV and JSON Lines, streamed, audited, for the Compliance role only."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from exchange.audit.models import AuditLog
from exchange.audit.services import audit_log_record
from exchange.roles import COMPLIANCE, OPERATORS, SUPPORT, roles_sync
from tests.factories import UserFactory, api_key_for, login_staff
from tests.signed_client import SignedClient

pytestmark = pytest.mark.django_db

ENDPOINTS = ("audit-logs", "orders", "trades", "ledger")
IP = "198.51.100.20"


def compliance_user(username="regina"):
    user = UserFactory(username=username, is_staff=True)
    user.groups.add(roles_sync()[COMPLIANCE])
    return user


@pytest.fixture
def compliance():
    client = APIClient()
    user = compliance_user()
    login_staff(client, user)
    client.user = user
    return client


def body(response) -> bytes:
    assert response.status_code == 200, response.content if not response.streaming else ""
    assert response.streaming
    return b"".join(response.streaming_content)


def csv_rows(response) -> list[dict]:
    return list(csv.DictReader(io.StringIO(body(response).decode())))


def history():
    """Rows of several actions, actors, markets and users, one of them an hour old."""
    alice, bob, operator = UserFactory(username="alice"), UserFactory(username="bob"), UserFactory(username="op")
    audit_log_record(action="WITHDRAWAL_REQUEST", object_type="wallet.withdrawal", object_id=1, actor_user=alice,
                     after={"amount": "1"})
    audit_log_record(action="WITHDRAWAL_APPROVE", object_type="wallet.withdrawal", object_id=1, actor_staff=operator,
                     subject_user=alice, before={"status": "REQUESTED"}, after={"status": "APPROVED"})
    audit_log_record(action="MARKET_HALT", object_type="matching.marketstatuschange", object_id=3,
                     market="BTC-USDT", actor_staff=operator, after={"requested_status": "HALTED"})
    audit_log_record(action="API_KEY_CREATE", object_type="exchange.apikey", object_id=9, actor_user=bob,
                     after={"label": "line\nbreak, \"quoted\" \\ backslash é"})
    audit_log_record(action="MARKET_STATUS_APPLIED", object_type="matching.marketstatuschange", object_id=3,
                     market="BTC-USDT", actor_system="matcher:BTC-USDT", after={"status": "HALTED"})
    return alice, bob, operator


def test_audit_log_csv_filtered_by_each_filter(compliance):
    """Each filter narrows the rows; filters combine; the header names the columns."""
    alice, bob, operator = history()

    def actions_of(**params):
        response = compliance.get("/api/v1/compliance/audit-logs", params)
        return [row["action"] for row in csv_rows(response)]

    everything = [action for action in actions_of() if not action.startswith("ROLE_")]  # the roles' set-up
    # The officer's sign-in comes first; the export's own EXPORT row, committed before the
    # file is read, last.
    assert everything == ["LOGIN", "WITHDRAWAL_REQUEST", "WITHDRAWAL_APPROVE", "MARKET_HALT", "API_KEY_CREATE",
                          "MARKET_STATUS_APPLIED", "EXPORT"]
    assert actions_of(user="alice") == ["WITHDRAWAL_REQUEST", "WITHDRAWAL_APPROVE"]
    assert actions_of(actor="op") == ["WITHDRAWAL_APPROVE", "MARKET_HALT"]
    assert actions_of(actor="system:matcher:BTC-USDT") == ["MARKET_STATUS_APPLIED"]
    assert actions_of(market="btc-usdt") == ["MARKET_HALT", "MARKET_STATUS_APPLIED"]
    assert actions_of(action="MARKET_HALT,api_key_create") == ["MARKET_HALT", "API_KEY_CREATE"]
    assert actions_of(actor="op", market="BTC-USDT") == ["MARKET_HALT"]
    later = (timezone.now() + timedelta(hours=1)).isoformat()
    assert actions_of(start=later) == []
    assert actions_of(end=later, action="MARKET_HALT") == ["MARKET_HALT"]
    assert actions_of(end=(timezone.now() - timedelta(days=1)).date().isoformat()) == []


def test_audit_log_fields_survive_csv_and_jsonl(compliance):
    """Text with newlines, quotes, commas and backslashes comes back intact in both formats;
    JSON Lines carries before/after as objects and users by name."""
    history()

    [csv_row] = [row for row in csv_rows(compliance.get("/api/v1/compliance/audit-logs", {"action": "API_KEY_CREATE"}))]
    response = compliance.get("/api/v1/compliance/audit-logs", {"action": "WITHDRAWAL_APPROVE,API_KEY_CREATE",
                                                                "format": "jsonl"})
    lines = body(response).decode().splitlines()

    label = "line\nbreak, \"quoted\" \\ backslash é"
    assert json.loads(csv_row["after"]) == {"label": label}
    approve, key = [json.loads(line) for line in lines]
    assert response["Content-Type"] == "application/x-ndjson"
    assert key["after"] == {"label": label} and key["actor_username"] == "bob"
    assert (approve["actor_staff_username"], approve["subject_username"]) == ("op", "alice")
    assert approve["before"] == {"status": "REQUESTED"} and approve["created_at"].endswith("Z")


def test_every_export_is_itself_audited(compliance):
    """The EXPORT row names the table, format, filters, the compliance officer and their address."""
    history()

    response = compliance.get("/api/v1/compliance/audit-logs", {"format": "jsonl", "user": "alice"}, REMOTE_ADDR=IP)
    body(response)

    row = AuditLog.objects.filter(action="EXPORT").get()
    assert (row.object_id, row.after) == ("audit-logs", {"format": "jsonl", "filters": {"user": "alice"}})
    assert (row.actor_staff_id, row.ip) == (compliance.user.pk, IP)
    assert response["Content-Disposition"].startswith('attachment; filename="audit-logs-')


@pytest.mark.parametrize("params, code, field", [
    ({"format": "xml"}, "INVALID_FORMAT", "format"),
    ({"start": "yesterday"}, "INVALID_DATE", "start"),
    ({"start": "2026-02-30"}, "INVALID_DATE", "start"),
    ({"start": "2026-02-01", "end": "2026-01-01"}, "INVALID_RANGE", "end"),
    ({"user": "nobody"}, "UNKNOWN_USER", "user"),
    ({"actor": "nobody"}, "UNKNOWN_USER", "actor"),
    ({"action": "drop table"}, "INVALID_ACTION", "action"),
    ({"action": "ÉTAT"}, "INVALID_ACTION", "action"),
    ({"user": "alice\x00"}, "INVALID_CHARACTER", "user"),
    ({"actor": "system:matcher\x00"}, "INVALID_CHARACTER", "actor"),
    ({"market": "BTC/USDT"}, "INVALID_MARKET", "market"),
    ({"page": "2"}, "UNKNOWN_FILTER", "page"),
])
def test_bad_filters_are_400_and_export_nothing(compliance, params, code, field):
    """A bad filter is refused before anything is written: no file, no EXPORT row."""
    response = compliance.get("/api/v1/compliance/audit-logs", params)

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == (code, field)
    assert not AuditLog.objects.filter(action="EXPORT").exists()


@pytest.mark.parametrize("endpoint, params, field", [
    ("orders", {"actor": "regina"}, "actor"),
    ("orders", {"action": "PLACE_ORDER"}, "action"),
    ("trades", {"action": "TRADE"}, "action"),
    ("ledger", {"market": "BTC-USDT"}, "market"),
    ("ledger", {"actor": "system:matcher"}, "actor"),
])
def test_filters_a_table_does_not_have_are_refused_not_ignored(compliance, endpoint, params, field):
    response = compliance.get(f"/api/v1/compliance/{endpoint}", params)

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["field"]) == ("UNSUPPORTED_FILTER", field)


# -- who may export ---------------------------------------------------------------------------


def _client_for(role: str):
    if role == "anonymous":
        return APIClient()
    if role == "api key of a compliance user":
        api_key, secret = api_key_for(compliance_user("keyed"), permissions=("read",))
        return SignedClient(api_key.key_id, secret)
    user = UserFactory(username=f"user-{role.lower().replace(' ', '-')}", is_staff=role != "trader",
                       is_superuser=role == "superuser")
    if role in (OPERATORS, SUPPORT, COMPLIANCE):
        user.groups.add(roles_sync()[role])
    client = APIClient()
    if user.is_staff:
        login_staff(client, user)
    else:
        client.force_login(user)
    return client


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("role, status, code", [
    ("anonymous", 401, "NOT_AUTHENTICATED"),
    ("trader", 403, "COMPLIANCE_ONLY"),
    (SUPPORT, 403, "COMPLIANCE_ONLY"),
    (OPERATORS, 403, "COMPLIANCE_ONLY"),
    ("superuser", 403, "COMPLIANCE_ONLY"),
    ("api key of a compliance user", 403, "API_KEY_NOT_ALLOWED"),
    (COMPLIANCE, 200, None),
])
def test_only_the_compliance_role_may_export(endpoint, role, status, code):
    """Every export endpoint, tried with every kind of user: only a Compliance member with a
    session gets the file; the others get the JSON error and no EXPORT row is written."""
    client = _client_for(role)
    path = f"/api/v1/compliance/{endpoint}"

    response = client.get(path) if not isinstance(client, SignedClient) else client.get(path)

    assert response.status_code == status
    if code:
        assert response.json()["code"] == code
        assert not AuditLog.objects.filter(action="EXPORT").exists()
    else:
        assert body(response).startswith(b"id," if endpoint != "ledger" else b"entry_id,")
        assert AuditLog.objects.filter(action="EXPORT", object_id=endpoint).count() == 1


# -- the back office page and the command -----------------------------------------------------------


def test_the_admin_export_page_is_for_compliance_only(client, staff):
    """Operators get 403 on the page; a compliance user downloads the filtered CSV, and a bad
    filter comes back as a form error."""
    history()
    staff(OPERATORS)
    assert client.get("/admin/exchange/auditlog/export/").status_code == 403
    assert b"Compliance export" not in client.get("/admin/exchange/auditlog/").content

    login_staff(client, compliance_user())
    assert b"Compliance export" in client.get("/admin/exchange/auditlog/").content
    bad = client.post("/admin/exchange/auditlog/export/", {"table": "audit-logs", "format": "csv", "start": "soon"})
    response = client.post("/admin/exchange/auditlog/export/", {"table": "audit-logs", "format": "csv",
                                                                "market": "BTC-USDT"})

    assert bad.status_code == 200 and b"ISO 8601" in bad.content
    rows = csv_rows(response)
    assert [row["action"] for row in rows] == ["MARKET_HALT", "MARKET_STATUS_APPLIED"]
    assert AuditLog.objects.filter(action="EXPORT").count() == 1


def test_the_command_writes_the_export_and_audits_it(tmp_path):
    from django.core.management import call_command

    history()
    target = tmp_path / "export.jsonl"

    call_command("export_audit_log", "--format", "jsonl", "--actor", "op", "--output", str(target),
                 "--reason", "regulator request 17")

    lines = [json.loads(line) for line in target.read_text().splitlines()]
    assert [line["action"] for line in lines] == ["WITHDRAWAL_APPROVE", "MARKET_HALT"]
    row = AuditLog.objects.get(action="EXPORT")
    assert (row.actor_system, row.after["reason"]) == ("manage.py export_audit_log", "regulator request 17")
