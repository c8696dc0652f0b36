"""Retention deletes what its period no longer covers and no legal hold keeps; the audit chain
is cut only at its beginning, behind a signed checkpoint, and still verifies."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from exchange.audit.chain import audit_chain, audit_verify
from exchange.audit.models import AuditChainLink, AuditCheckpoint, AuditLog
from exchange.audit.retention import legal_hold_release, legal_hold_set, retention_enforce
from exchange.audit.tasks import retention_enforce as retention_enforce_task
from orders.models import Order, Trade
from orders.services import order_cancel
from tests.factories import UserFactory
from tests.matching.conftest import drain, market, matcher, place, traders  # noqa: F401  (fixtures)
from wallet.invariants import ledger_violations
from wallet.models import Hold

pytestmark = pytest.mark.django_db(transaction=True)

YEARS_AGO_8 = timezone.now() - timedelta(days=8 * 365)


def old_row(label: str, *, created_at=YEARS_AGO_8, actor_user_id=None) -> int:
    """An audit row written long ago (as a row of that age would have been: by one INSERT)."""
    with connection.cursor() as cursor:
        cursor.execute("""INSERT INTO exchange_auditlog (created_at, action, object_type, object_id, actor_system,
                                                         actor_user_id, subject_user_id)
                          VALUES (%s, 'LOGIN', 'auth.user', %s, 'old', %s, %s) RETURNING id""",
                       [created_at, label, actor_user_id, actor_user_id])
        return cursor.fetchone()[0]


def remaining(ids) -> list[int]:
    return sorted(AuditLog.objects.filter(id__in=ids).values_list("id", flat=True))


def test_old_audit_rows_go_up_to_the_first_one_a_legal_hold_keeps():
    """Old rows before a held one are deleted (rows and links, behind a signed checkpoint); the
    held row and everything after it stay; verify still holds; releasing the hold lets the next
    run go further; each run writes RETENTION_PURGE."""
    alice, operator = UserFactory(username="alice"), UserFactory(username="op", is_staff=True)
    ids = [old_row("a"), old_row("b"), old_row("c"), old_row("alice", actor_user_id=alice.pk), old_row("d"),
           old_row("e")]
    recent = old_row("now", created_at=timezone.now())
    hold = legal_hold_set(user=alice, reason="subpoena 17", actor=operator)
    audit_chain()

    deleted = retention_enforce()

    assert deleted["audit"] == 3
    assert remaining(ids + [recent]) == ids[3:] + [recent]
    checkpoint = AuditCheckpoint.objects.get()
    assert (checkpoint.seq, checkpoint.log_id) == (3, ids[2])
    assert not AuditChainLink.objects.filter(seq__lte=3).exists()
    result = audit_verify()
    assert result.ok and result.checkpoint_seq == 3, result.problems
    purge = AuditLog.objects.get(action="RETENTION_PURGE")
    assert (purge.actor_system, purge.after["deleted"]) == ("retention", {"audit": 3, "trades": 0, "orders": 0})

    legal_hold_release(hold=hold, actor=operator, reason="case closed")
    audit_chain()
    assert retention_enforce()["audit"] == 3
    assert remaining(ids + [recent]) == [recent]
    assert audit_verify().ok


def test_a_legal_hold_on_a_period_keeps_the_rows_of_that_period():
    operator = UserFactory(username="op", is_staff=True)
    times = [YEARS_AGO_8 + timedelta(days=day) for day in range(4)]
    ids = [old_row(str(day), created_at=moment) for day, moment in enumerate(times)]
    legal_hold_set(starts_at=times[2] - timedelta(hours=1), ends_at=times[2] + timedelta(hours=1),
                   reason="investigation 4", actor=operator)
    audit_chain()

    retention_enforce()

    assert remaining(ids) == ids[2:]
    assert audit_verify().ok


def test_nothing_goes_while_its_period_runs_or_retention_is_off(settings):
    ids = [old_row("recent", created_at=timezone.now() - timedelta(days=365))]
    audit_chain()
    assert retention_enforce()["audit"] == 0

    settings.RETENTION_AUDIT_DAYS = 0
    old_row("ancient")
    audit_chain()
    assert retention_enforce() == {"audit": 0, "trades": 0, "orders": 0}
    assert remaining(ids) == ids and not AuditCheckpoint.objects.exists()


def test_the_database_refuses_to_delete_audit_rows_beyond_the_checkpoint():
    """Even with a checkpoint in place, a DELETE reaching past it is refused."""
    from django.db.utils import IntegrityError

    ids = [old_row("a"), old_row("b")]
    audit_chain()
    retention_enforce()
    kept = old_row("now", created_at=timezone.now())
    audit_chain()

    with pytest.raises(IntegrityError):
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM exchange_auditlog WHERE id = %s", [kept])
    assert remaining(ids) == []


def _age(*, orders, trades, days: int) -> None:
    """Move orders (and their closed holds) and trades into the past, as time would."""
    moment = timezone.now() - timedelta(days=days)
    Order.objects.filter(pk__in=[o.pk for o in orders]).update(created_at=moment, updated_at=moment)
    Trade.objects.filter(pk__in=[t.pk for t in trades]).update(executed_at=moment)
    Hold.objects.filter(reference__in=[f"order:{o.pk}" for o in orders], status="CLOSED").update(closed_at=moment)


def test_old_orders_and_trades_go_unless_held_and_the_ledger_stays_sound(traders, matcher):  # noqa: F811
    """Six-year-old trades and ended orders are deleted, except those of a user under a legal
    hold (and orders a kept trade refers to); open orders stay; the ledger checks still pass."""
    alice, bob, carol = traders
    operator = UserFactory(username="op", is_staff=True)
    sell = place(alice, "SELL", price="100", quantity="1")
    buy = place(bob, "BUY", price="100", quantity="1")
    canceled = place(carol, "BUY", price="90", quantity="1")
    resting = place(carol, "BUY", price="80", quantity="1")
    drain(matcher)
    order_cancel(user=carol, order_id=canceled.pk)
    drain(matcher)
    trade = Trade.objects.get()
    _age(orders=[sell, buy, canceled, resting], trades=[trade], days=6 * 365)
    hold = legal_hold_set(user=bob, reason="fraud inquiry", actor=operator)

    deleted = retention_enforce_task()

    assert (deleted["trades"], deleted["orders"]) == (0, 1)
    assert set(Order.objects.values_list("pk", flat=True)) == {sell.pk, buy.pk, resting.pk}
    assert Trade.objects.filter(pk=trade.pk).exists()

    legal_hold_release(hold=hold, actor=operator, reason="closed")
    deleted = retention_enforce()

    assert (deleted["trades"], deleted["orders"]) == (1, 2)
    assert list(Order.objects.values_list("pk", flat=True)) == [resting.pk]
    assert ledger_violations() == []
