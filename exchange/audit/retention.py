"""Retention: deleting audit rows, orders and trades past their retention period, never
what a legal hold covers.

Periods come from settings (RETENTION_AUDIT_DAYS, RETENTION_ORDERS_DAYS,
RETENTION_TRADES_DAYS; 0 keeps a table forever). ``retention_enforce``
runs daily from beat, deletes in chunks of one short transaction each, and
records what it did as a RETENTION_PURGE audit row.

- Trades executed before the cutoff go, unless a hold covers the maker or
  the taker, or the time they executed.
- Orders that ended (filled, canceled, expired, rejected) before the cutoff
  go once no trade refers to them any more, with their amendment requests,
  unless a hold covers their user or their lifetime. Their ledger holds
  stay (the journal is kept forever); ``orders.invariants`` accepts a closed
  hold whose order retention removed (closed before the cutoff).
- The audit log is cut only at its beginning, so the chain stays whole:
  from the last checkpoint, every chained row up to (not including) the
  first one still in its period or under a hold. The cut is first recorded
  in a signed ``AuditCheckpoint`` (the database refuses to delete rows a
  checkpoint does not cover), then the rows and their links are deleted.
  ``verify_audit_log`` then starts from the checkpoint.

The ledger (journal, accounts, holds) is never deleted: every balance is
the sum of its entries.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from exchange.audit import actions
from exchange.audit.chain import GENESIS, position_message
from exchange.audit.models import LegalHold
from exchange.audit.services import audit_log_record, audit_origin, snapshot
from exchange.core.errors import ApplicationError
from exchange.audit.signing import sign

FINAL_ORDER_STATUSES = ("FILLED", "CANCELED", "EXPIRED", "REJECTED")


def retention_cutoff(days: int, now: datetime | None = None) -> datetime | None:
    """The time before which rows are past a period of ``days`` (None: kept forever)."""
    if days <= 0:
        return None
    return (now or timezone.now()) - timedelta(days=days)


def _held(user_columns: tuple[str, ...], start: str, end: str | None = None) -> str:
    """SQL: an active legal hold covers the row (one of its users, or its time span [start, end])."""
    end = end or start
    users = ", ".join(user_columns)
    return f"""EXISTS (
        SELECT 1 FROM exchange_legalhold h
        WHERE h.released_at IS NULL
          AND (h.user_id IS NULL OR h.user_id IN ({users}))
          AND (h.starts_at IS NULL OR {end} >= h.starts_at)
          AND (h.ends_at IS NULL OR {start} < h.ends_at))"""


_TRADES = f"""
    SELECT t.id FROM orders_trade t
    WHERE t.id > %s AND t.executed_at < %s
      AND NOT {_held(("t.maker_user_id", "t.taker_user_id"), "t.executed_at")}
    ORDER BY t.id LIMIT %s
"""

_ORDERS = f"""
    SELECT o.id FROM orders_order o
    WHERE o.id > %s AND o.created_at < %s AND o.updated_at < %s AND o.status IN {FINAL_ORDER_STATUSES}
      AND EXISTS (SELECT 1 FROM wallet_hold wh
                  WHERE wh.reference = 'order:' || o.id AND wh.status = 'CLOSED' AND wh.closed_at < %s)
      AND NOT EXISTS (SELECT 1 FROM orders_trade t WHERE t.maker_order_id = o.id)
      AND NOT EXISTS (SELECT 1 FROM orders_trade t WHERE t.taker_order_id = o.id)
      AND NOT {_held(("o.user_id",), "o.created_at", "o.updated_at")}
    ORDER BY o.id LIMIT %s
"""


def _purge_by_id(select_sql: str, params, deletes: list[str], *, chunk_size: int) -> int:
    """Select ids after a cursor in chunks and run ``deletes`` (each taking the ids) per chunk."""
    last_id, deleted = 0, 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(select_sql, [last_id, *params, chunk_size])
            ids = [row[0] for row in cursor.fetchall()]
            if not ids:
                return deleted
            for statement in deletes:
                cursor.execute(statement, [ids])
            deleted += len(ids)
        last_id = ids[-1]
        if len(ids) < chunk_size:
            return deleted


def trades_purge(*, cutoff: datetime, chunk_size: int) -> int:
    return _purge_by_id(_TRADES, [cutoff], ["DELETE FROM orders_trade WHERE id = ANY(%s)"], chunk_size=chunk_size)


def orders_purge(*, cutoff: datetime, chunk_size: int) -> int:
    return _purge_by_id(_ORDERS, [cutoff, cutoff, cutoff], [
        "DELETE FROM orders_orderamendment WHERE order_id = ANY(%s)",
        "DELETE FROM orders_order WHERE id = ANY(%s)",
    ], chunk_size=chunk_size)


_LAST_CHECKPOINT = "SELECT coalesce(max(seq), 0) FROM exchange_auditcheckpoint"
# The first chained row, after the checkpoint, that must stay: the cut goes just before it.
_FIRST_KEPT = f"""
    SELECT l.seq FROM exchange_auditchainlink l JOIN exchange_auditlog a ON a.id = l.log_id
    WHERE l.seq > %s
      AND (a.created_at >= %s OR {_held(("a.actor_user_id", "a.actor_staff_id", "a.subject_user_id"), "a.created_at")})
    ORDER BY l.seq LIMIT 1
"""
_LINK = """
    SELECT l.seq, a.txid::text::bigint, l.log_id, l.hash
    FROM exchange_auditchainlink l JOIN exchange_auditlog a ON a.id = l.log_id WHERE l.seq = %s
"""


def audit_purge(*, cutoff: datetime, chunk_size: int) -> int:
    """Cut the beginning of the audit chain up to the first row still kept; returns rows deleted."""
    with transaction.atomic(), connection.cursor() as cursor:
        # Under the head's lock: one cut at a time, and the head is where the chain ends.
        cursor.execute("SELECT seq FROM exchange_auditchainhead WHERE id = 1 FOR UPDATE")
        head = cursor.fetchone()
        if head is None:
            return 0
        cursor.execute(_LAST_CHECKPOINT)
        [sealed] = cursor.fetchone()
        cursor.execute(_FIRST_KEPT, [sealed, cutoff])
        first_kept = cursor.fetchone()
        cut = (first_kept[0] - 1) if first_kept else head[0]
        if cut <= sealed:
            return 0
        cursor.execute(_LINK, [cut])
        link = cursor.fetchone()
        if link is None:  # the row at the cut is gone: verify_audit_log reports it; cut nothing
            return 0
        seq, txid, log_id, hash_ = link
        hash_ = bytes(hash_ or GENESIS)
        cursor.execute(
            """INSERT INTO exchange_auditcheckpoint (seq, txid, log_id, hash, signature, cutoff, created_at)
               VALUES (%s, %s, %s, %s, %s, %s, now())""",
            [seq, txid, log_id, hash_, sign(position_message(seq, txid, log_id, hash_)), cutoff])
    deleted = 0
    for low in range(sealed + 1, cut + 1, chunk_size):
        high = min(low + chunk_size - 1, cut)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("""DELETE FROM exchange_auditlog a USING exchange_auditchainlink l
                              WHERE l.log_id = a.id AND l.seq BETWEEN %s AND %s""", [low, high])
            deleted += cursor.rowcount
            cursor.execute("DELETE FROM exchange_auditchainlink WHERE seq BETWEEN %s AND %s", [low, high])
    return deleted


def retention_enforce(*, now: datetime | None = None, chunk_size: int = 10_000) -> dict[str, int]:
    """Delete what every table's retention period no longer covers and no legal hold keeps.

    Returns rows deleted per table; when anything was deleted, a
    RETENTION_PURGE audit row says how much and with which cutoffs.
    """
    now = now or timezone.now()
    cutoffs = {
        "audit": retention_cutoff(settings.RETENTION_AUDIT_DAYS, now),
        "trades": retention_cutoff(settings.RETENTION_TRADES_DAYS, now),
        # An order stays at least as long as the trades that refer to it.
        "orders": retention_cutoff(settings.RETENTION_ORDERS_DAYS, now),
    }
    deleted = {table: 0 for table in cutoffs}
    if cutoffs["trades"] is not None:
        deleted["trades"] = trades_purge(cutoff=cutoffs["trades"], chunk_size=chunk_size)
    if cutoffs["orders"] is not None:
        deleted["orders"] = orders_purge(cutoff=cutoffs["orders"], chunk_size=chunk_size)
    if cutoffs["audit"] is not None:
        deleted["audit"] = audit_purge(cutoff=cutoffs["audit"], chunk_size=chunk_size)
    if any(deleted.values()):
        audit_log_record(
            action=actions.RETENTION_PURGE, object_type="exchange.retention", object_id=now.date().isoformat(),
            after={"deleted": deleted, "cutoffs": {table: cutoff for table, cutoff in cutoffs.items()}},
            actor_system="retention")
    return deleted


_HOLD_FIELDS = ("user", "starts_at", "ends_at", "reason", "released_at", "released_by", "release_reason")


@transaction.atomic
def legal_hold_set(*, user=None, starts_at: datetime | None = None, ends_at: datetime | None = None, reason: str,
                   actor, audit: dict | None = None) -> LegalHold:
    """Keep a user's data, a period's, or a user's in a period, from retention until released."""
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError("REASON_REQUIRED", "Say which case or request the hold serves.", field="reason")
    if user is None and starts_at is None and ends_at is None:
        raise ApplicationError("HOLD_SCOPE_REQUIRED", "A hold names a user, a period, or both.", field="user")
    if starts_at is not None and ends_at is not None and ends_at <= starts_at:
        raise ApplicationError("INVALID_RANGE", "The period must end after it starts.", field="ends_at")
    hold = LegalHold.objects.create(user=user, starts_at=starts_at, ends_at=ends_at, reason=reason, created_by=actor)
    audit_log_record(action=actions.LEGAL_HOLD_SET, object_type="exchange.legalhold", object_id=hold.pk,
                     after=snapshot(hold, _HOLD_FIELDS), subject_user=user, **audit_origin(audit, staff=actor))
    return hold


@transaction.atomic
def legal_hold_release(*, hold: LegalHold, actor, reason: str, audit: dict | None = None) -> LegalHold:
    """Release a hold (it stays on record); releasing a released hold is refused."""
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError("REASON_REQUIRED", "Say why the hold is released.", field="reason")
    hold = LegalHold.objects.select_for_update().get(pk=hold.pk)
    if hold.released_at is not None:
        raise ApplicationError("HOLD_ALREADY_RELEASED", f"Legal hold {hold.pk} was already released.", status_code=409)
    before = snapshot(hold, _HOLD_FIELDS)
    hold.released_at, hold.released_by, hold.release_reason = timezone.now(), actor, reason
    hold.save(update_fields=["released_at", "released_by", "release_reason"])
    audit_log_record(action=actions.LEGAL_HOLD_RELEASE, object_type="exchange.legalhold", object_id=hold.pk,
                     before=before, after=snapshot(hold, _HOLD_FIELDS), subject_user=hold.user_id,
                     **audit_origin(audit, staff=actor))
    return hold
