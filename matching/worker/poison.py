"""Setting aside a command that fails every time it is applied.

A command whose batch raises is applied again alone; one that still fails
``set_aside_after()`` times in a row, with the book rebuilt from the database
before each try, is *poisoned* (an order row the engine cannot take, a
rounding that can never pass). Without this the matcher would exit, its
successor would meet the same command during recovery, and one bad order
would take its market down for good.

``set_aside(...)`` then, in one transaction of its own (never inside a
batch):

- a new order still PENDING ends REJECTED with ``status_reason``
  ``UNPROCESSABLE``, its hold released and closed through the wallet
  services (``ledger_apply``, which also writes ``balance.changed``), and an
  ``order.updated`` outbox event of the same shape as the batch's;
- a cancel (or cancel-all) request is withdrawn (``cancel_requested_at``
  cleared: the order stays as it is, and the owner may ask again);
- an amendment still REQUESTED ends REJECTED (``UNPROCESSABLE``), and the
  order's hold is trued up to what its unfilled part needs (the amend
  service had topped it up for the new terms);
- a market status change still REQUESTED ends REJECTED, with a
  ``market.status_change_rejected`` event;
- a ``risk.RiskAlert`` of kind ``SET_ASIDE`` (severity HIGH) is raised on the
  user behind the command, with the error as evidence, for operators.

The market's sequence is fenced like every batch: the row must still hold
the book's sequence, or another matcher writes and nothing is done.
Transient failures (the database or Redis away, a serialization failure, a
sequence conflict) are never counted: they retry as before and, if they
last, end the process for its supervisor. Neither is a failure that hits
more than ``MAX_SET_ASIDE_PER_MINUTE`` commands a minute: that is no bad
command but a bad matcher, and rejecting every order would be worse than
stopping.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal

import redis
from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from exchange.outbox.models import OutboxEvent, Topic
from exchange.outbox.services import Event, outbox_emit_many
from matching.models import MarketState, MarketStatusChange
from matching.worker.batch import Command, SequenceConflict
from orders.models import OPEN_STATUSES, Order, OrderAmendment, OrderStatus, hold_reference
from orders.rules import hold_needed
from risk.models import AlertKind, Severity
from risk.services import alert_raise
from wallet.services import HoldRelease, ledger_apply

logger = logging.getLogger(__name__)

REASON = "UNPROCESSABLE"
DEFAULT_SET_ASIDE_AFTER = 3
# More set-asides than this within a minute is no bad command but a bad
# matcher (a schema that does not match the code, a bug on every path): the
# failure propagates instead, and the process ends for its supervisor, rather
# than rejecting every order of the market one by one.
MAX_SET_ASIDE_PER_MINUTE = 5
# The same across restarts (each incarnation's count starts at zero): orders
# of the market rejected as UNPROCESSABLE within ten minutes.
MAX_REJECTED_PER_10_MINUTES = 10


def rejected_recently(market) -> int:
    """Orders of ``market`` set aside (REJECTED, UNPROCESSABLE) in the last ten minutes."""
    since = timezone.now() - timedelta(minutes=10)
    return Order.objects.filter(market=market, status=OrderStatus.REJECTED, status_reason=REASON,
                                updated_at__gte=since).count()


def set_aside_after() -> int:
    return max(1, int(getattr(settings, "MATCHER_SET_ASIDE_AFTER", DEFAULT_SET_ASIDE_AFTER)))


def is_transient(exc: BaseException) -> bool:
    """A failure that says nothing about the command: never counts towards setting it aside."""
    return isinstance(exc, (OperationalError, InterfaceError, SequenceConflict, redis.RedisError))


def set_aside(*, market, book, command: Command, error: BaseException, tries: int) -> dict:
    """Reject ``command`` for good (see the module docstring). Returns what was done:
    the user behind the command, the outcome, and the orders whose rows changed
    (the matcher pushes them to their owner's live channels)."""
    now = timezone.now()
    detail = f"{type(error).__name__}: {error}"[:500]
    with transaction.atomic():
        moved = MarketState.objects.filter(market=market, last_sequence=book.sequence).update(updated_at=now)
        if not moved:
            raise SequenceConflict(f"{market.symbol}: market state is not at sequence {book.sequence}")
        user_id, outcome, order_ids = _reject(market, book, command, now)
        if user_id is not None:
            alert_raise(
                kind=AlertKind.SET_ASIDE, severity=Severity.HIGH, user_id=user_id, market_id=market.id,
                summary=f"{market.symbol}: {command.kind} {command.row_id} failed {tries} times and was set aside "
                        f"({outcome})",
                evidence=[{"command": command.kind, "row_id": command.row_id, "entry_id": command.entry_id,
                           "outcome": outcome, "tries": tries, "error": detail, "at": now.isoformat()}])
    logger.error("poisoned command set aside", extra={
        "symbol": market.symbol, "kind": command.kind, "row_id": command.row_id, "tries": tries,
        "outcome": outcome, "error": detail})
    return {"user_id": user_id, "outcome": outcome, "order_ids": order_ids}


def _reject(market, book, command: Command, now) -> tuple[int | None, str, list[int]]:
    """Who is behind the command, what was done, and the orders whose rows changed."""
    kind = command.kind
    if kind == "new":
        return _reject_new_order(market, command.row_id, now)
    if kind == "cancel":
        row = Order.objects.select_for_update().filter(
            pk=command.row_id, market=market, status__in=OPEN_STATUSES).values("user_id").first()
        if row is None:
            return None, "nothing to do: the order is closed", []
        Order.objects.filter(pk=command.row_id).update(cancel_requested_at=None, updated_at=now)
        return row["user_id"], "cancel request withdrawn", [command.row_id]
    if kind == "cancel_all":
        flagged = Order.objects.filter(market=market, user_id=command.row_id, status__in=OPEN_STATUSES,
                                       cancel_requested_at__isnull=False)
        ids = list(flagged.order_by("id").select_for_update().values_list("id", flat=True))
        Order.objects.filter(pk__in=ids).update(cancel_requested_at=None, updated_at=now)
        return command.row_id, f"cancel-all request withdrawn ({len(ids)} orders)", ids
    if kind == "amend":
        return _reject_amendment(market, book, command.row_id, now)
    if kind == "status":
        request = MarketStatusChange.objects.select_for_update().filter(
            pk=command.row_id, market=market, status=MarketStatusChange.Status.REQUESTED).first()
        if request is None:
            return None, "nothing to do: the request is no longer REQUESTED", []
        MarketStatusChange.objects.filter(pk=request.pk).update(
            status=MarketStatusChange.Status.REJECTED, applied_at=now)
        outbox_emit_many([Event(
            topic=Topic.MARKETS, key=market.symbol, sequence=book.sequence,
            event_type="market.status_change_rejected",
            payload={"market": market.symbol, "change_id": request.pk, "status": market.status,
                     "requested_status": request.new_status, "previous_status": None,
                     "reason": request.reason, "rejected_because": REASON, "sequence": book.sequence,
                     "applied_at": now})])
        return request.requested_by_id, "status change rejected", []
    return None, f"unknown kind {kind!r}", []


def _reject_new_order(market, order_id: int, now) -> tuple[int | None, str, list[int]]:
    table = Order._meta.db_table
    with connection.cursor() as cursor:
        # The order's row and its order.updated event in one statement, in the
        # batch's payload shape (docs/EVENTS.md).
        cursor.execute(
            f"""
            WITH locked AS (
                SELECT id FROM {table} WHERE id = %s AND market_id = %s AND status = %s FOR UPDATE
            ), updated AS (
                UPDATE {table} AS o SET status = %s, status_reason = %s, filled_quantity = 0, filled_notional = 0,
                                        updated_at = %s
                FROM locked WHERE o.id = locked.id
                RETURNING o.*
            ), event AS (
                INSERT INTO {OutboxEvent._meta.db_table} (topic, key, event_type, version, payload, sequence)
                SELECT %s, %s, 'order.updated', 1, jsonb_build_object(
                    'order_id', u.id, 'client_order_id', u.client_order_id, 'user_id', u.user_id, 'market', %s,
                    'side', u.side, 'type', u.type, 'status', u.status, 'status_reason', u.status_reason,
                    'price', trim_scale(u.price)::text, 'stop_price', trim_scale(u.stop_price)::text,
                    'quantity', trim_scale(u.quantity)::text, 'quote_quantity', trim_scale(u.quote_quantity)::text,
                    'filled_quantity', trim_scale(u.filled_quantity)::text,
                    'filled_notional', trim_scale(u.filled_notional)::text,
                    'average_price', NULL,
                    'fee_total', trim_scale(u.fee_total)::text,
                    'accepted_sequence', u.accepted_sequence, 'last_sequence', u.last_sequence,
                    'updated_at', u.updated_at), u.last_sequence
                FROM updated u
            )
            SELECT user_id FROM updated
            """,
            [order_id, market.id, OrderStatus.PENDING, OrderStatus.REJECTED, REASON, now,
             Topic.ORDERS.value, market.symbol, market.symbol],
        )
        row = cursor.fetchone()
    if row is None:
        return None, "nothing to do: the order is no longer PENDING", []
    ledger_apply([HoldRelease(reference=hold_reference(order_id), amount=None, close=True)])
    return row[0], "order rejected, hold released", [order_id]


def _reject_amendment(market, book, amendment_id: int, now) -> tuple[int | None, str, list[int]]:
    amendment = OrderAmendment.objects.select_related("order").filter(
        pk=amendment_id, order__market=market, status=OrderAmendment.Status.REQUESTED).first()
    if amendment is None:
        return None, "nothing to do: the amendment is no longer REQUESTED", []
    order = Order.objects.select_for_update().get(pk=amendment.order_id)  # the batch's lock order: the order first
    OrderAmendment.objects.filter(pk=amendment.pk, status=OrderAmendment.Status.REQUESTED).update(
        status=OrderAmendment.Status.REJECTED, reject_reason=REASON, applied_at=now)
    resting = book.open_order(order.pk)
    if resting is not None and not resting.untriggered and order.status in (
            OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED):
        need = hold_needed(side=order.side, price=order.price, quantity=order.quantity,
                           filled_quantity=order.filled_quantity or Decimal(0))
        ledger_apply([HoldRelease(reference=hold_reference(order.pk), keep=need)])
    return order.user_id, "amendment rejected, hold trued up", [order.pk]
