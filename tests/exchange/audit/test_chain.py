"""The hash chain: rows are chained after commit in (txid, id) order, exactly once, without
writers waiting; verify_audit_log proves the chain and names the first row that was altered,
deleted or slipped in."""

from __future__ import annotations

import threading

import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction

from exchange.audit.chain import audit_chain, audit_verify
from exchange.audit.models import AuditChainLink
from exchange.outbox.models import OutboxEvent
from tests.exchange.audit.conftest import record

pytestmark = pytest.mark.django_db(transaction=True)


def links() -> list[tuple[int, int]]:
    return list(AuditChainLink.objects.order_by("seq").values_list("seq", "log_id"))


def test_rows_are_chained_in_commit_order_and_published():
    """Each committed row gets the next position, a hash over its content and the previous
    hash, and an audit.logs event carrying both; a second run finds nothing new."""
    written = [record(object_id=n).id for n in range(5)]

    assert audit_chain() == 5
    assert audit_chain() == 0

    assert links() == list(zip(range(1, 6), written))
    chain = list(AuditChainLink.objects.order_by("seq"))
    assert bytes(chain[0].prev_hash) == bytes(32)
    assert all(bytes(later.prev_hash) == bytes(earlier.hash) for earlier, later in zip(chain, chain[1:]))
    events = list(OutboxEvent.objects.filter(topic="audit.logs").order_by("id"))
    assert [(e.sequence, e.key, e.event_type) for e in events] == [(n, "chain", "BALANCE_ADJUST") for n in range(1, 6)]
    assert events[0].payload["hash"] == bytes(chain[0].hash).hex() and events[0].payload["after"] == {"amount": "1.5"}
    result = audit_verify()
    assert result.ok and result.checked == 5 and result.head_seq == 5 and result.pending == 0


def test_a_row_of_a_transaction_still_open_waits_and_is_not_missed():
    """A row inserted (with the lower id) by a transaction that is still open when later rows
    commit stays unchained until it commits, then joins the chain: nothing is skipped, nothing
    chained twice, and verify holds."""
    inserted, release = threading.Event(), threading.Event()
    early_id = []

    def slow_writer():
        try:
            with transaction.atomic():
                early_id.append(record(action="SLOW").id)
                inserted.set()
                release.wait(30)
        finally:
            connections.close_all()

    thread = threading.Thread(target=slow_writer)
    thread.start()
    assert inserted.wait(30)
    later = [record(object_id=n).id for n in range(3)]
    assert early_id[0] < later[0]

    chained_while_open = audit_chain()
    release.set()
    thread.join(30)
    chained_after = audit_chain()

    assert chained_while_open == 0  # the open transaction holds the horizon back
    assert chained_after == 4
    assert sorted(log_id for _, log_id in links()) == sorted(early_id + later)
    assert audit_verify().ok


def test_verify_command_exits_zero_on_a_sound_chain(capsys):
    """manage.py verify_audit_log chains nothing itself and exits 0 with a summary when the chain holds."""
    for n in range(3):
        record(object_id=n)
    audit_chain()

    call_command("verify_audit_log")

    assert "the audit chain holds" in capsys.readouterr().out


def _verify_fails(capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        call_command("verify_audit_log")
    assert exit_info.value.code != 0
    return capsys.readouterr().err


def test_verify_names_a_row_altered_in_sql_with_triggers_disabled(superuser_sql, capsys):
    """Changing one row's content directly in SQL, triggers off, breaks its hash: the command
    exits non-zero naming that row."""
    ids = [record(object_id=n).id for n in range(4)]
    audit_chain()

    superuser_sql("UPDATE exchange_auditlog SET after = '{\"amount\": \"150\"}' WHERE id = %s", [ids[2]])

    message = _verify_fails(capsys)
    assert f"Row {ids[2]} (position 3) was altered" in message
    assert audit_verify().first.kind == "ALTERED"


def test_verify_names_a_row_deleted_in_sql(superuser_sql, capsys):
    """A row deleted (its link kept) is named as deleted."""
    ids = [record(object_id=n).id for n in range(4)]
    audit_chain()

    superuser_sql("DELETE FROM exchange_auditlog WHERE id = %s", [ids[1]])

    assert f"Row {ids[1]} (position 2) was deleted" in _verify_fails(capsys)


def test_verify_names_rows_deleted_with_their_links(superuser_sql):
    """Deleting a row and its link leaves a gap in the positions; deleting the last ones leaves
    the chain short of its signed head. Both are reported."""
    ids = [record(object_id=n).id for n in range(5)]
    audit_chain()

    superuser_sql("DELETE FROM exchange_auditlog WHERE id = ANY(%s)", [[ids[1], ids[4]]])
    superuser_sql("DELETE FROM exchange_auditchainlink WHERE log_id = ANY(%s)", [[ids[1], ids[4]]])

    result = audit_verify()
    kinds = [(problem.kind, problem.seq) for problem in result.problems]
    assert ("MISSING", 2) in kinds and ("MISSING", 5) in kinds
    assert result.first.seq == 2


def test_verify_names_a_row_inserted_inside_the_chained_range(superuser_sql, capsys):
    """A row slipped in with triggers off at a position the chain already covers (an old
    transaction id) has no link: it is named as inserted."""
    ids = [record(object_id=n).id for n in range(3)]
    audit_chain()
    with connection.cursor() as cursor:
        cursor.execute("SELECT txid::text FROM exchange_auditlog WHERE id = %s", [ids[1]])
        [txid] = cursor.fetchone()

    superuser_sql("""INSERT INTO exchange_auditlog (id, txid, action, object_type, object_id, actor_system)
                     VALUES (%s, %s::xid8, 'BALANCE_ADJUST', 'wallet.ledgertransaction', '9', 'forged')""",
                  [ids[1] + 100_000, txid])

    assert f"Row {ids[1] + 100_000} was inserted" in _verify_fails(capsys)


def test_verify_names_a_row_slipped_into_the_chain_with_a_forged_link(superuser_sql):
    """Even with a correctly hashed link of its own, a row slipped between two chained rows
    (later positions renumbered) is named: the next link does not follow it."""
    from exchange.audit.chain import CONTENT_SQL, link_hash

    ids = [record(object_id=n).id for n in range(3)]
    audit_chain()
    chain = {seq: link for seq, link in ((l.seq, l) for l in AuditChainLink.objects.all())}
    with connection.cursor() as cursor:
        cursor.execute("SELECT txid::text FROM exchange_auditlog WHERE id = %s", [ids[0]])
        [txid] = cursor.fetchone()
    forged_id = ids[0] + 1 if ids[0] + 1 not in ids else ids[0] + 100_000
    superuser_sql("UPDATE exchange_auditchainlink SET seq = seq + 1000 WHERE seq >= 2")
    superuser_sql("UPDATE exchange_auditchainlink SET seq = seq - 999 WHERE seq >= 1000")
    superuser_sql("""INSERT INTO exchange_auditlog (id, txid, action, object_type, object_id, actor_system)
                     VALUES (%s, %s::xid8, 'BALANCE_ADJUST', 'wallet.ledgertransaction', '9', 'forged')""",
                  [forged_id, txid])
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {CONTENT_SQL} FROM exchange_auditlog a WHERE a.id = %s", [forged_id])
        content = cursor.fetchone()
    forged_hash = link_hash(bytes(chain[1].hash), 2, content)
    superuser_sql("INSERT INTO exchange_auditchainlink (seq, log_id, prev_hash, hash) VALUES (2, %s, %s, %s)",
                  [forged_id, bytes(chain[1].hash), forged_hash])

    result = audit_verify()

    assert not result.ok
    assert any(problem.kind == "INSERTED" and problem.log_id == forged_id for problem in result.problems)


def test_verify_refuses_a_head_moved_without_the_signing_key(superuser_sql):
    """Cutting rows off the end and moving the head back to match is caught by the head's signature."""
    ids = [record(object_id=n).id for n in range(3)]
    audit_chain()
    last = AuditChainLink.objects.get(seq=2)

    superuser_sql("DELETE FROM exchange_auditlog WHERE id = %s", [ids[2]])
    superuser_sql("DELETE FROM exchange_auditchainlink WHERE seq = 3")
    superuser_sql("UPDATE exchange_auditchainhead SET seq = 2, log_id = %s, hash = %s", [ids[1], bytes(last.hash)])

    result = audit_verify()
    assert [problem.kind for problem in result.problems] == ["HEAD"]


def test_rows_not_yet_chained_are_pending_not_problems():
    """Rows written after the last chaining are reported as pending; the chain still holds."""
    record()
    audit_chain()
    record()
    record()

    result = audit_verify()

    assert result.ok and result.pending == 2


def test_an_idle_chaining_run_writes_nothing():
    """Beat runs the chainer every second: with nothing new it only reads (no transaction id is
    taken, so no WAL and no row lock)."""
    record()
    audit_chain()

    def next_xid() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
            return cursor.fetchone()[0]

    before = next_xid()
    assert audit_chain() == 0
    assert next_xid() == before
