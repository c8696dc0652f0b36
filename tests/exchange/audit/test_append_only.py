"""Audit rows cannot be edited or deleted: the database refuses it for the application's
SQL, the ORM refuses it before SQL, and the back office offers no way to."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.db.utils import IntegrityError

from exchange.audit.models import AppendOnlyError, AuditChainLink, AuditCheckpoint, AuditLog
from exchange.roles import COMPLIANCE, OPERATORS
from tests.exchange.audit.conftest import record

pytestmark = pytest.mark.django_db

REFUSED = IntegrityError  # restrict_violation


def sql(statement: str, params=()):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params)


@pytest.mark.parametrize("statement", [
    "UPDATE exchange_auditlog SET action = 'LOGIN' WHERE id = %s",
    "UPDATE exchange_auditlog SET after = NULL",
    "DELETE FROM exchange_auditlog WHERE id = %s",
    "DELETE FROM exchange_auditlog",
])
def test_sql_updates_and_deletes_of_audit_rows_are_refused(statement):
    """Any UPDATE, and any DELETE of rows no retention checkpoint covers, fails in the database
    (restrict_violation) and leaves the row as it was."""
    row = record()
    params = [row.pk] if "%s" in statement else []

    with pytest.raises(REFUSED) as error:
        sql(statement, params)

    assert "is refused" in str(error.value) and "append-only" in str(error.value)
    assert AuditLog.objects.get(pk=row.pk).action == "BALANCE_ADJUST"


def test_the_chain_and_its_checkpoints_refuse_sql_changes_too():
    """Links, checkpoints and the head refuse the same (a link only goes below a checkpoint)."""
    row = record()
    sql("INSERT INTO exchange_auditchainlink (seq, log_id, prev_hash, hash) VALUES (1, %s, %s, %s)",
        [row.pk, bytes(32), bytes(32)])
    sql("INSERT INTO exchange_auditchainhead (id, seq, txid, log_id, hash, signature) VALUES (1, 1, 0, %s, %s, '')",
        [row.pk, bytes(32)])
    sql("""INSERT INTO exchange_auditcheckpoint (seq, txid, log_id, hash, signature, cutoff)
           VALUES (0, 0, 0, %s, '', now())""", [bytes(32)])
    for statement in ("UPDATE exchange_auditchainlink SET seq = seq + 1", "DELETE FROM exchange_auditchainlink",
                      "UPDATE exchange_auditcheckpoint SET seq = 0", "DELETE FROM exchange_auditcheckpoint",
                      "DELETE FROM exchange_auditchainhead"):
        with pytest.raises(REFUSED):
            sql(statement)


def test_the_orm_refuses_before_any_sql():
    """save() of a stored row, delete(), QuerySet.update() and .delete() raise AppendOnlyError."""
    row = AuditLog.objects.get(pk=record().pk)
    row.action = "LOGIN"

    for attempt in (row.save, row.delete, lambda: AuditLog.objects.filter(pk=row.pk).update(action="LOGIN"),
                    lambda: AuditLog.objects.all().delete(), lambda: AuditChainLink.objects.all().delete(),
                    lambda: AuditCheckpoint.objects.update(seq=0)):
        with pytest.raises(AppendOnlyError):
            attempt()
    assert AuditLog.objects.get(pk=row.pk).action == "BALANCE_ADJUST"


@pytest.mark.parametrize("role", [OPERATORS, COMPLIANCE])
def test_the_back_office_shows_audit_rows_read_only(client, staff, role):
    """Whoever can see the log cannot add, change or delete a row: a POST to the change page
    changes nothing, add and delete are forbidden."""
    user = staff(role)
    user.is_superuser = role == OPERATORS  # even a superuser
    user.save()
    row = record()

    assert client.get("/admin/exchange/auditlog/").status_code == 200
    assert client.get(f"/admin/exchange/auditlog/{row.pk}/change/").status_code == 200
    client.post(f"/admin/exchange/auditlog/{row.pk}/change/", {"action": "LOGIN"})
    assert client.get("/admin/exchange/auditlog/add/").status_code == 403
    assert client.get(f"/admin/exchange/auditlog/{row.pk}/delete/").status_code == 403
    client.post("/admin/exchange/auditlog/", {"action": "delete_selected", "_selected_action": [row.pk], "post": "yes"})
    assert AuditLog.objects.get(pk=row.pk).action == "BALANCE_ADJUST"


def test_writers_cannot_forge_the_chain_columns_or_the_time():
    """The id, time and transaction id come from the database; only content columns are written."""
    row = record()
    with connection.cursor() as cursor:
        cursor.execute("SELECT created_at, txid::text FROM exchange_auditlog WHERE id = %s", [row.pk])
        created_at, txid = cursor.fetchone()
    assert created_at == row.created_at and int(txid) == row.txid
    assert not AuditChainLink.objects.filter(log_id=row.pk).exists()  # chained later, after commit


def test_what_a_client_sends_cannot_fail_the_audited_action():
    """NUL characters (PostgreSQL refuses them in text and jsonb), an address that is not one
    and an oversized user agent are made storable instead of failing the caller's transaction."""
    row = record(object_id=0, user_agent="bot\x00" + "x" * 1000, ip="not-an-ip", request_id="r\x00id",
                 after={"username": "ali\x00ce", "nested": ["\x00"]})

    stored = AuditLog.objects.get(pk=row.pk)
    assert (stored.object_id, stored.ip, stored.request_id) == ("0", None, "rid")
    assert stored.user_agent == "bot" + "x" * 509
    assert stored.after == {"username": "alice", "nested": [""]}
