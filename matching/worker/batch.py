"""Applying a batch of commands: engine in memory, then ONE database transaction.

``BatchApplier.apply(commands)`` loads the rows the commands refer to, skips
commands whose effect is already in the database (the exactly-once rule: a
NEW for an order that is no longer PENDING, a cancel of a closed order, an
amendment or status change no longer REQUESTED), feeds the rest to the book,
and turns the engine's events into writes:

- order rows: status, fills, fees, queue position, the event sequences;
- trades, one-minute candles, the market's last sequence and price;
- the ledger: each trade settled from the two orders' holds with their fees,
  every order that ended released and its hold closed, and every order still
  open trued up so that it holds exactly what it still needs;
- amendment and status-change requests marked applied or rejected;
- outbox events (docs/EVENTS.md): ``order.updated`` per changed order and
  ``trade.executed`` per trade, each carrying its engine sequence, and
  ``market.status_changed``/``_rejected``; PostgreSQL builds their payloads
  from the rows just written, one INSERT per kind; the ledger adds
  ``balance.changed`` per (user, asset) the same way.

All of it commits together or not at all. The caller owns what happens when
it does not (the in-memory book is then ahead of the database and must be
rebuilt). Rows are locked in the platform's order: orders by ascending id,
then ledger accounts by ascending id (inside the wallet).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal

from django.db import connection, transaction
from django.utils import timezone

from exchange.core.localcache import config_changed
from exchange.models import Market
from exchange.outbox.models import OutboxEvent, Topic
from exchange.outbox.services import Event, outbox_emit_many
from matching import engine
from matching.models import MarketState, MarketStatusChange
from matching.units import MarketUnits
from matching.worker.rebuild import engine_amounts
from orders.models import OPEN_STATUSES, Candle, Order, OrderAmendment, OrderStatus, Side, Trade, hold_reference
from orders.rules import hold_needed
from risk.gate import admission_refusals
from wallet.fees import fee_amount
from wallet.services import HoldRelease, TradeSettlement, ledger_apply

logger = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)
ONE_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    return (moment - EPOCH) // ONE_MICROSECOND


def from_micros(micros: int) -> datetime:
    return EPOCH + timedelta(microseconds=micros)


@dataclass(frozen=True)
class Command:
    """One command to apply: a stream entry, or a row found in the database."""

    kind: str  # matching.stream NEW, CANCEL, CANCEL_ALL, AMEND, STATUS
    row_id: int
    entry_id: str | None = None


class SequenceConflict(RuntimeError):
    """The market's last sequence moved under us: another matcher wrote it."""


_ORDER_FIELDS = (
    "id", "user_id", "side", "type", "time_in_force", "price", "stop_price", "quantity", "quote_quantity",
    "hold_amount", "stp_mode", "status", "cancel_requested_at", "created_at", "maker_fee_rate", "taker_fee_rate",
)


@dataclass
class _OrderChange:
    """What the batch changes on one order row (None: unchanged)."""

    status: str | None = None
    status_reason: str | None = None
    filled_lots: int | None = None
    filled_tl: int | None = None
    fee_delta: Decimal = Decimal(0)
    accepted_sequence: int | None = None
    priority_sequence: int | None = None
    last_sequence: int | None = None
    triggered_at: datetime | None = None
    price: Decimal | None = None
    quantity: Decimal | None = None


@dataclass
class BatchResult:
    """What one applied batch did, for acknowledging and publishing."""

    events: list = field(default_factory=list)
    order_changes: dict = field(default_factory=dict)
    trades: list = field(default_factory=list)
    skipped: int = 0
    sequence: int = 0
    order_users: dict = field(default_factory=dict)  # order id -> user id of the orders the batch loaded


class BatchApplier:
    # Consulted once per batch with the users of its NEW orders: {user_id: reason} for
    # those whose new orders are rejected instead (kill switches, risk/gate.py).
    admission = staticmethod(admission_refusals)

    def __init__(self, market: Market, book: engine.OrderBook):
        self.market = market
        self.book = book
        self.units = MarketUnits.of(market)
        self.base_precision = market.base.precision
        self.quote_precision = market.quote.precision

    # ----------------------------------------------------------------- load

    def _load(self, commands: list[Command]):
        order_ids = {c.row_id for c in commands if c.kind in ("new", "cancel")}
        amendments = {
            a.id: a
            for a in OrderAmendment.objects.filter(
                id__in=[c.row_id for c in commands if c.kind == "amend"], order__market=self.market)
        }
        order_ids |= {a.order_id for a in amendments.values()}
        flagged_by_user: dict[int, list[int]] = {}
        users = [c.row_id for c in commands if c.kind == "cancel_all"]
        if users:
            flagged = (
                Order.objects.filter(market=self.market, user_id__in=users, cancel_requested_at__isnull=False,
                                     status__in=OPEN_STATUSES)
                .order_by("id")
                .values_list("user_id", "id")
            )
            for user_id, order_id in flagged:
                flagged_by_user.setdefault(user_id, []).append(order_id)
                order_ids.add(order_id)
        orders = {
            row["id"]: row
            for row in Order.objects.filter(id__in=order_ids, market=self.market).values(*_ORDER_FIELDS)
        }
        status_changes = {
            s.id: s
            for s in MarketStatusChange.objects.filter(
                id__in=[c.row_id for c in commands if c.kind == "status"], market=self.market)
        }
        return orders, amendments, flagged_by_user, status_changes

    # ---------------------------------------------------------------- apply

    def apply(self, commands: list[Command]) -> BatchResult:
        orders, amendments, flagged_by_user, status_changes = self._load(commands)
        result = BatchResult()
        changes: dict[int, _OrderChange] = defaultdict(_OrderChange)
        status_now = {order_id: row["status"] for order_id, row in orders.items()}
        terms_now = {order_id: (row["price"], row["quantity"]) for order_id, row in orders.items()}
        # amendment id -> (status, reason, sequence, (previous price, previous quantity))
        amendment_outcomes: dict[int, tuple] = {}
        status_outcomes: dict[int, tuple[str, int | None, str]] = {}
        new_rows = [orders[c.row_id] for c in commands if c.kind == "new" and c.row_id in orders]
        refused = self.admission({row["user_id"] for row in new_rows if row["status"] == OrderStatus.PENDING},
                                 market_id=self.market.id)

        def run(engine_command, *, amendment_id=None, status_change_id=None):
            events = self.book.apply(engine_command)
            for event in events:
                self._record(event, changes, status_now, terms_now, result, amendment_id, amendment_outcomes,
                             status_change_id, status_outcomes)
            result.events.extend(events)

        for command in self._expand(commands, flagged_by_user):
            kind = command.kind
            if kind == "new":
                row = orders.get(command.row_id)
                if row is None or status_now.get(row["id"]) != OrderStatus.PENDING:
                    result.skipped += 1
                elif row["user_id"] in refused:
                    self._end_unsequenced(row, changes, status_now, OrderStatus.REJECTED, refused[row["user_id"]])
                elif row["cancel_requested_at"] is not None:
                    self._cancel_unsequenced(row, changes, status_now)
                else:
                    run(self._new_order_command(row))
            elif kind == "cancel":
                row = orders.get(command.row_id)
                current = status_now.get(command.row_id)
                if row is None or current not in OPEN_STATUSES:
                    result.skipped += 1
                elif current == OrderStatus.PENDING:
                    self._cancel_unsequenced(row, changes, status_now)
                else:
                    timestamp = to_micros(row["cancel_requested_at"] or timezone.now())
                    run(engine.CancelOrder(order_id=row["id"], user_id=row["user_id"], timestamp=timestamp))
            elif kind == "amend":
                amendment = amendments.get(command.row_id)
                if amendment is None or amendment.status != OrderAmendment.Status.REQUESTED or amendment.id in amendment_outcomes:
                    result.skipped += 1
                    continue
                order_row = orders[amendment.order_id]
                if status_now.get(order_row["id"]) not in (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED):
                    amendment_outcomes[amendment.id] = (OrderAmendment.Status.REJECTED, "ORDER_NOT_RESTING", None,
                                                        (None, None))
                    changes[order_row["id"]]  # touch: its hold is trued up below
                    continue
                run(
                    engine.AmendOrder(
                        order_id=order_row["id"],
                        user_id=order_row["user_id"],
                        price_ticks=None if amendment.new_price is None else self.units.price_to_ticks(amendment.new_price),
                        quantity_lots=None if amendment.new_quantity is None else self.units.quantity_to_lots(
                            amendment.new_quantity),
                        timestamp=to_micros(amendment.created_at),
                    ),
                    amendment_id=amendment.id,
                )
            elif kind == "status":
                request = status_changes.get(command.row_id)
                if request is None or request.status != MarketStatusChange.Status.REQUESTED or request.id in status_outcomes:
                    result.skipped += 1
                    continue
                run(engine.SetMarketStatus(status=request.new_status, timestamp=to_micros(request.created_at)),
                    status_change_id=request.id)
            else:  # pragma: no cover - parse_command refuses unknown kinds
                raise ValueError(f"unknown command kind {kind!r}")

        result.order_changes = changes
        result.order_users = {order_id: row["user_id"] for order_id, row in orders.items()}
        result.sequence = self.book.sequence
        if changes or status_outcomes:
            self._write(result, changes, orders, amendments, amendment_outcomes, status_changes, status_outcomes)
        return result

    def _expand(self, commands: list[Command], flagged_by_user: dict[int, list[int]]):
        for command in commands:
            if command.kind == "cancel_all":
                for order_id in flagged_by_user.get(command.row_id, []):
                    yield Command("cancel", order_id, command.entry_id)
            else:
                yield command

    def _new_order_command(self, row: dict) -> engine.NewOrder:
        units = self.units
        quantity_lots, quote_limit_tl = engine_amounts(
            units, side=row["side"], order_type=row["type"], quantity=row["quantity"],
            quote_quantity=row["quote_quantity"], hold_amount=row["hold_amount"])
        return engine.NewOrder(
            order_id=row["id"],
            user_id=row["user_id"],
            side=row["side"],
            order_type=row["type"],
            time_in_force=row["time_in_force"] or engine.GTC,
            price_ticks=None if row["price"] is None else units.price_to_ticks(row["price"]),
            stop_price_ticks=None if row["stop_price"] is None else units.price_to_ticks(row["stop_price"]),
            quantity_lots=quantity_lots,
            quote_limit_tl=quote_limit_tl,
            stp_mode=row["stp_mode"],
            timestamp=to_micros(row["created_at"]),
        )

    def _cancel_unsequenced(self, row, changes, status_now) -> None:
        """A cancel that reached the matcher before its order did: the order never
        enters the book; it ends CANCELED with nothing filled."""
        self._end_unsequenced(row, changes, status_now, OrderStatus.CANCELED, "CANCEL")

    def _end_unsequenced(self, row, changes, status_now, status: str, reason: str) -> None:
        """An order that never enters the book (cancelled first, or refused by the admission
        gate): it ends with nothing filled, and its hold is released below."""
        change = changes[row["id"]]
        change.status = status
        change.status_reason = reason
        change.filled_lots = change.filled_tl = 0
        status_now[row["id"]] = status

    def _record(self, event, changes, status_now, terms_now, result, amendment_id, amendment_outcomes,
                status_change_id, status_outcomes) -> None:
        kind = event.kind
        if kind == "BOOK_DELTA":
            return
        if kind == "TRADE":
            result.trades.append(event)
            for order_id in (event.maker_order_id, event.taker_order_id):
                changes[order_id].last_sequence = event.sequence
            return
        if kind in ("MARKET_STATUS_CHANGED", "MARKET_STATUS_REJECTED"):
            if status_change_id is not None:
                outcome = MarketStatusChange.Status.APPLIED if kind == "MARKET_STATUS_CHANGED" else MarketStatusChange.Status.REJECTED
                status_outcomes[status_change_id] = (outcome, event.sequence, getattr(event, "previous_status", ""))
            return
        if kind == "CANCEL_REJECTED":
            logger.info("cancel refused by the engine", extra={"order_id": event.order_id, "reason": event.reason})
            return
        change = changes[event.order_id]
        change.last_sequence = event.sequence
        if kind == "ACCEPTED":
            change.status = event.status
            change.accepted_sequence = event.sequence
            if event.status == engine.NEW:
                change.priority_sequence = event.sequence
        elif kind == "REJECTED":
            change.status = OrderStatus.REJECTED
            change.status_reason = event.reason
            change.filled_lots = change.filled_tl = 0
        elif kind == "PARTIALLY_FILLED":
            change.status = OrderStatus.PARTIALLY_FILLED
            change.filled_lots, change.filled_tl = event.quantity_lots_filled, event.notional_tl_filled
        elif kind == "FILLED":
            change.status = OrderStatus.FILLED
            change.filled_lots, change.filled_tl = event.quantity_lots_filled, event.notional_tl_filled
        elif kind in ("CANCELED", "EXPIRED"):
            change.status = OrderStatus.CANCELED if kind == "CANCELED" else OrderStatus.EXPIRED
            change.status_reason = event.reason
            change.filled_lots, change.filled_tl = event.quantity_lots_filled, event.notional_tl_filled
        elif kind == "TRIGGERED":
            change.status = OrderStatus.NEW
            change.priority_sequence = event.sequence
            change.triggered_at = from_micros(event.timestamp)
        elif kind == "AMENDED":
            change.price = self.units.ticks_to_price(event.price_ticks)
            change.quantity = self.units.lots_to_quantity(event.quantity_lots)
            if not event.priority_kept:
                change.priority_sequence = event.sequence
            if amendment_id is not None:
                amendment_outcomes[amendment_id] = (
                    OrderAmendment.Status.APPLIED, "", event.sequence, terms_now[event.order_id])
            terms_now[event.order_id] = (change.price, change.quantity)
        elif kind == "AMEND_REJECTED":
            if amendment_id is not None:
                amendment_outcomes[amendment_id] = (OrderAmendment.Status.REJECTED, event.reason, event.sequence,
                                                    (None, None))
        if change.status is not None:
            status_now[event.order_id] = change.status

    # ---------------------------------------------------------------- write

    def _write(self, result, changes, orders, amendments, amendment_outcomes, status_changes, status_outcomes) -> None:
        units = self.units
        market = self.market
        fee_rates = self._fee_rates(result.trades, orders)
        trade_rows, settlements, fee_deltas = [], [], defaultdict(Decimal)
        for trade in result.trades:
            quantity = units.lots_to_quantity(trade.quantity_lots)
            notional = units.tl_to_quote(trade.price_ticks * trade.quantity_lots)
            taker_rate = fee_rates[trade.taker_order_id][1]
            maker_rate = fee_rates[trade.maker_order_id][0]
            taker_buys = trade.taker_side == Side.BUY
            # Each side pays its fee in the asset it receives (base for the buyer,
            # quote for the seller), rounded down: a fee only splits money that exists.
            taker_fee = fee_amount(received=quantity if taker_buys else notional, rate=taker_rate,
                                   precision=self.base_precision if taker_buys else self.quote_precision)
            maker_fee = fee_amount(received=notional if taker_buys else quantity, rate=maker_rate,
                                   precision=self.quote_precision if taker_buys else self.base_precision)
            fee_deltas[trade.taker_order_id] += taker_fee
            fee_deltas[trade.maker_order_id] += maker_fee
            buyer_order, seller_order = (
                (trade.taker_order_id, trade.maker_order_id) if taker_buys else (trade.maker_order_id, trade.taker_order_id))
            buyer_user, seller_user = (
                (trade.taker_user_id, trade.maker_user_id) if taker_buys else (trade.maker_user_id, trade.taker_user_id))
            settlements.append(TradeSettlement(
                reference=f"trade:{market.symbol}:{trade.sequence}",
                base_asset_id=market.base_id,
                quote_asset_id=market.quote_id,
                buyer_id=buyer_user,
                seller_id=seller_user,
                buyer_hold_reference=hold_reference(buyer_order),
                seller_hold_reference=hold_reference(seller_order),
                quantity=quantity,
                notional=notional,
                buyer_fee=taker_fee if taker_buys else maker_fee,
                seller_fee=maker_fee if taker_buys else taker_fee,
            ))
            trade_rows.append(Trade(
                market=market,
                sequence=trade.sequence,
                price=units.ticks_to_price(trade.price_ticks),
                quantity=quantity,
                notional=notional,
                taker_side=trade.taker_side,
                maker_order_id=trade.maker_order_id,
                taker_order_id=trade.taker_order_id,
                maker_user_id=trade.maker_user_id,
                taker_user_id=trade.taker_user_id,
                maker_fee=maker_fee,
                taker_fee=taker_fee,
                executed_at=from_micros(trade.timestamp),
            ))
        for order_id, delta in fee_deltas.items():
            changes[order_id].fee_delta += delta

        now = timezone.now()
        with transaction.atomic():
            self._update_orders(changes, now)
            # Only now, with the order rows locked: the amend service adds funds
            # and records its request under the same lock, so the requests read
            # here are exactly those whose funds the holds contain.
            releases = self._hold_true_ups(changes, amendment_outcomes)
            if trade_rows:
                self._insert_trades(trade_rows)
                self._upsert_candles(trade_rows)
            for amendment_id, (outcome, reason, sequence, (previous_price, previous_quantity)) in amendment_outcomes.items():
                OrderAmendment.objects.filter(pk=amendment_id, status=OrderAmendment.Status.REQUESTED).update(
                    status=outcome, reject_reason=reason, sequence=sequence, applied_at=now,
                    previous_price=previous_price, previous_quantity=previous_quantity)
            market_events = []
            for request_id, (outcome, sequence, previous) in status_outcomes.items():
                request = status_changes[request_id]
                MarketStatusChange.objects.filter(pk=request_id).update(
                    status=outcome, sequence=sequence, previous_status=previous or "", applied_at=now)
                applied = outcome == MarketStatusChange.Status.APPLIED
                if applied:
                    Market.objects.filter(pk=market.pk).update(status=request.new_status, updated_at=now)
                    market.status = request.new_status
                    config_changed()  # order entry caches the market: refused everywhere within 0.25 s
                market_events.append(Event(
                    topic=Topic.MARKETS, key=market.symbol, sequence=sequence,
                    event_type="market.status_changed" if applied else "market.status_change_rejected",
                    payload={"market": market.symbol, "change_id": request_id, "status": market.status,
                             "requested_status": request.new_status, "previous_status": previous or None,
                             "reason": request.reason, "sequence": sequence, "applied_at": now}))
            outbox_emit_many(market_events)
            self._advance_market_state(result, trade_rows)
            ledger_apply(settlements + releases)

    def _fee_rates(self, trades, orders) -> dict[int, tuple[Decimal, Decimal]]:
        """(maker rate, taker rate) of every order in ``trades``; one query for
        those the batch did not load (resting makers, triggered stops)."""
        rates = {}
        missing = set()
        for trade in trades:
            for order_id in (trade.maker_order_id, trade.taker_order_id):
                row = orders.get(order_id)
                if row is not None:
                    rates[order_id] = (row["maker_fee_rate"], row["taker_fee_rate"])
                elif order_id not in rates:
                    missing.add(order_id)
        if missing:
            for order_id, maker, taker in Order.objects.filter(id__in=missing).values_list(
                    "id", "maker_fee_rate", "taker_fee_rate"):
                rates[order_id] = (maker, taker)
        return rates

    def _hold_true_ups(self, changes, amendment_outcomes) -> list[HoldRelease]:
        """Releases after the batch's settlements: every order that ended gives
        back what is left and closes its hold; every order still resting keeps
        exactly what its unfilled part needs, except while an amendment of it
        waits (its hold then also covers the new terms, see
        ``orders.rules.amend_hold_needed``)."""
        releases = []
        open_ids = []
        for order_id, change in changes.items():
            if change.status in (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED):
                releases.append(HoldRelease(reference=hold_reference(order_id), amount=None, close=True))
            else:
                open_ids.append(order_id)
        if not open_ids:
            return releases
        waiting = {
            order_id
            for amendment_id, order_id in OrderAmendment.objects.filter(
                order_id__in=open_ids, status=OrderAmendment.Status.REQUESTED).values_list("id", "order_id")
            if amendment_id not in amendment_outcomes
        }
        for order_id in sorted(open_ids):
            resting = self.book.open_order(order_id)
            if resting is None or resting.untriggered or order_id in waiting:
                continue  # an untriggered stop keeps its whole hold
            need = hold_needed(
                side=resting.side,
                price=self.units.ticks_to_price(resting.price_ticks),
                quantity=self.units.lots_to_quantity(resting.quantity_lots_remaining),
                filled_quantity=Decimal(0),
            )
            releases.append(HoldRelease(reference=hold_reference(order_id), keep=need))
        return releases

    def _update_orders(self, changes, now) -> None:
        ids = sorted(changes)
        units = self.units
        columns = {name: [] for name in (
            "status", "status_reason", "filled_quantity", "filled_notional", "fee_delta", "accepted_sequence",
            "priority_sequence", "last_sequence", "triggered_at", "price", "quantity")}
        for order_id in ids:
            change = changes[order_id]
            columns["status"].append(change.status)
            columns["status_reason"].append(change.status_reason)
            columns["filled_quantity"].append(
                None if change.filled_lots is None else units.lots_to_quantity(change.filled_lots))
            columns["filled_notional"].append(None if change.filled_tl is None else units.tl_to_quote(change.filled_tl))
            columns["fee_delta"].append(change.fee_delta)
            columns["accepted_sequence"].append(change.accepted_sequence)
            columns["priority_sequence"].append(change.priority_sequence)
            columns["last_sequence"].append(change.last_sequence)
            columns["triggered_at"].append(change.triggered_at)
            columns["price"].append(change.price)
            columns["quantity"].append(change.quantity)
        emit = self._order_event_flags([changes[order_id] for order_id in ids])
        table = Order._meta.db_table
        with connection.cursor() as cursor:
            # Lock in ascending id order first (see the module docstring), then update in one statement,
            # which also writes the orders' outbox events from the updated rows.
            cursor.execute(f"SELECT id FROM {table} WHERE id = ANY(%s) ORDER BY id FOR UPDATE", [ids])
            cursor.execute(
                f"""
                WITH updated AS (
                UPDATE {table} AS o SET
                    status = COALESCE(v.status, o.status),
                    status_reason = COALESCE(v.status_reason, o.status_reason),
                    filled_quantity = COALESCE(v.filled_quantity, o.filled_quantity),
                    filled_notional = COALESCE(v.filled_notional, o.filled_notional),
                    fee_total = o.fee_total + v.fee_delta,
                    accepted_sequence = COALESCE(v.accepted_sequence, o.accepted_sequence),
                    priority_sequence = COALESCE(v.priority_sequence, o.priority_sequence),
                    last_sequence = COALESCE(v.last_sequence, o.last_sequence),
                    triggered_at = COALESCE(v.triggered_at, o.triggered_at),
                    price = COALESCE(v.price, o.price),
                    quantity = COALESCE(v.quantity, o.quantity),
                    updated_at = %s
                FROM unnest(%s::bigint[], %s::text[], %s::text[], %s::numeric[], %s::numeric[], %s::numeric[],
                            %s::bigint[], %s::bigint[], %s::bigint[], %s::timestamptz[], %s::numeric[], %s::numeric[],
                            %s::boolean[])
                    AS v(id, status, status_reason, filled_quantity, filled_notional, fee_delta, accepted_sequence,
                         priority_sequence, last_sequence, triggered_at, price, quantity, emit)
                WHERE o.id = v.id
                RETURNING o.*, v.emit
                )
                INSERT INTO {OutboxEvent._meta.db_table} (topic, key, event_type, version, payload, sequence)
                SELECT %s, %s, 'order.updated', 1, jsonb_build_object(
                    'order_id', u.id, 'client_order_id', u.client_order_id, 'user_id', u.user_id, 'market', %s,
                    'side', u.side, 'type', u.type, 'status', u.status, 'status_reason', u.status_reason,
                    'price', trim_scale(u.price)::text, 'stop_price', trim_scale(u.stop_price)::text,
                    'quantity', trim_scale(u.quantity)::text, 'quote_quantity', trim_scale(u.quote_quantity)::text,
                    'filled_quantity', trim_scale(u.filled_quantity)::text,
                    'filled_notional', trim_scale(u.filled_notional)::text,
                    'average_price', CASE WHEN u.filled_quantity > 0
                        THEN trim_scale(round(u.filled_notional / u.filled_quantity, 18))::text END,
                    'fee_total', trim_scale(u.fee_total)::text,
                    'accepted_sequence', u.accepted_sequence, 'last_sequence', u.last_sequence,
                    'updated_at', u.updated_at), u.last_sequence
                FROM updated u WHERE u.emit
                ORDER BY u.last_sequence NULLS FIRST, u.id
                """,
                [now, ids, *columns.values(), emit, Topic.ORDERS.value, self.market.symbol, self.market.symbol],
            )

    @staticmethod
    def _order_event_flags(changes: list[_OrderChange]) -> list[bool]:
        """Which changes are an order event: not those the batch only touched
        (an amendment refused before the engine, whose hold is trued up)."""
        return [any(value is not None for value in (
            change.status, change.filled_lots, change.accepted_sequence, change.priority_sequence,
            change.last_sequence, change.price, change.quantity)) or bool(change.fee_delta)
            for change in changes]

    def _insert_trades(self, trade_rows: list[Trade]) -> None:
        """The trades, and one ``trade.executed`` event per trade in sequence
        order built from the inserted rows: one statement over server-bound
        arrays (``bulk_create`` spent more time preparing values in Python
        than PostgreSQL spent inserting them)."""
        market = self.market
        base, quote = market.base.code, market.quote.code
        columns = [[] for _ in range(12)]
        for trade in trade_rows:
            for column, value in zip(columns, (
                    trade.sequence, trade.price, trade.quantity, trade.notional, trade.taker_side,
                    trade.maker_order_id, trade.taker_order_id, trade.maker_user_id, trade.taker_user_id,
                    trade.maker_fee, trade.taker_fee, trade.executed_at)):
                column.append(value)
        with connection.cursor() as cursor:
            cursor.execute(
                f"""
                WITH inserted AS (
                    INSERT INTO {Trade._meta.db_table} (market_id, sequence, price, quantity, notional, taker_side,
                        maker_order_id, taker_order_id, maker_user_id, taker_user_id, maker_fee, taker_fee, executed_at)
                    SELECT %s, v.* FROM unnest(%s::bigint[], %s::numeric[], %s::numeric[], %s::numeric[], %s::text[],
                                               %s::bigint[], %s::bigint[], %s::int[], %s::int[], %s::numeric[],
                                               %s::numeric[], %s::timestamptz[]) AS v
                    RETURNING *
                )
                INSERT INTO {OutboxEvent._meta.db_table} (topic, key, event_type, version, payload, sequence)
                SELECT %s, %s, 'trade.executed', 1, jsonb_build_object(
                    'trade_id', t.id, 'market', %s, 'sequence', t.sequence,
                    'price', trim_scale(t.price)::text, 'quantity', trim_scale(t.quantity)::text,
                    'notional', trim_scale(t.notional)::text, 'taker_side', t.taker_side,
                    'maker_order_id', t.maker_order_id, 'taker_order_id', t.taker_order_id,
                    'maker_user_id', t.maker_user_id, 'taker_user_id', t.taker_user_id,
                    'maker_fee', trim_scale(t.maker_fee)::text,
                    'maker_fee_asset', CASE WHEN t.taker_side = 'BUY' THEN %s ELSE %s END,
                    'taker_fee', trim_scale(t.taker_fee)::text,
                    'taker_fee_asset', CASE WHEN t.taker_side = 'BUY' THEN %s ELSE %s END,
                    'executed_at', t.executed_at), t.sequence
                FROM inserted t
                ORDER BY t.sequence
                """,
                [market.id, *columns, Topic.TRADES.value, market.symbol, market.symbol, quote, base, base, quote],
            )
            assert cursor.rowcount == len(trade_rows), "one trade.executed event per trade"

    def _upsert_candles(self, trade_rows: list[Trade]) -> None:
        minutes: dict[datetime, dict] = {}
        for trade in trade_rows:  # in sequence order
            minute = trade.executed_at.replace(second=0, microsecond=0)
            candle = minutes.get(minute)
            if candle is None:
                minutes[minute] = dict(open=trade.price, high=trade.price, low=trade.price, close=trade.price,
                                       volume=trade.quantity, quote_volume=trade.notional, trade_count=1,
                                       first_sequence=trade.sequence, last_sequence=trade.sequence)
            else:
                candle["high"] = max(candle["high"], trade.price)
                candle["low"] = min(candle["low"], trade.price)
                candle["close"] = trade.price
                candle["volume"] += trade.quantity
                candle["quote_volume"] += trade.notional
                candle["trade_count"] += 1
                candle["last_sequence"] = trade.sequence
        table = Candle._meta.db_table
        with connection.cursor() as cursor:
            for minute, c in minutes.items():
                cursor.execute(
                    f"""
                    INSERT INTO {table} (market_id, opened_at, open, high, low, close, volume, quote_volume,
                                         trade_count, first_sequence, last_sequence)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (market_id, opened_at) DO UPDATE SET
                        high = GREATEST({table}.high, EXCLUDED.high),
                        low = LEAST({table}.low, EXCLUDED.low),
                        close = EXCLUDED.close,
                        volume = {table}.volume + EXCLUDED.volume,
                        quote_volume = {table}.quote_volume + EXCLUDED.quote_volume,
                        trade_count = {table}.trade_count + EXCLUDED.trade_count,
                        last_sequence = EXCLUDED.last_sequence
                    """,
                    [self.market.pk, minute, c["open"], c["high"], c["low"], c["close"], c["volume"],
                     c["quote_volume"], c["trade_count"], c["first_sequence"], c["last_sequence"]],
                )

    def _advance_market_state(self, result: BatchResult, trade_rows: list[Trade]) -> None:
        """Move the market's sequence forward, fenced: the row must still hold the
        sequence this book started the batch from, or another writer exists."""
        first_sequence = result.events[0].sequence - 1 if result.events else result.sequence
        updates = {"last_sequence": result.sequence, "updated_at": timezone.now()}
        if trade_rows:
            updates["last_price"] = trade_rows[-1].price
        moved = MarketState.objects.filter(market=self.market, last_sequence=first_sequence).update(**updates)
        if not moved:
            raise SequenceConflict(
                f"{self.market.symbol}: market state is not at sequence {first_sequence}; another matcher wrote it")
