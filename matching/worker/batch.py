"""Applying a batch of commands: engine in memory, then ONE database transaction.

A batch has two halves (docs/TRADING.md, "The batch write path"), which the
matcher overlaps: the engine runs batch N+1 while batch N commits.

``BatchApplier.prepare(commands)`` loads the rows the commands refer to,
skips commands whose effect is already in the database (the exactly-once
rule: a NEW for an order that is no longer PENDING, a cancel of a closed
order or of one with no cancel request, an amendment or status change no
longer REQUESTED; for rows the batch still in flight changed, its outcome
counts, not the row read), feeds the rest to the book stamped with the
batch's clock, and has ``translate`` turn the trades into rows and netted
ledger legs in integers. Its plan holds everything the write needs, so the
write reads nothing of the book.

``BatchApplier.write(plan)`` writes, set-based, in one transaction:

- order rows: status, fills, fees, queue position, the event sequences;
- trades, the batch's one-minute candle, the market's last sequence (written
  whenever the engine's moved) and price;
- the ledger, one netted journal transaction (``wallet.services.batch_settle``):
  the trades from the two orders' holds with their fees, every order that
  ended released and its hold closed, and every order still open trued up
  so that it holds exactly what it still needs;
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
from exchange.core.sql import array_literal, bool_literal, server_cursor, tid_literal
from exchange.models import Market
from exchange.outbox.models import Topic
from exchange.outbox.services import Event, outbox_emit_many
from matching import engine
from matching.models import MarketStatusChange
from matching.units import MarketUnits
from matching.worker.rebuild import engine_amounts
from matching.units import EXACT
from matching.worker.translate import MarketSpec, TradeTranslation, candle_of, rate_ratio, translate_trades
from orders.models import OPEN_STATUSES, Candle, Order, OrderAmendment, OrderStatus, hold_reference
from risk.gate import admission_refusals
from wallet.models import TransactionKind
from wallet.services import BatchSettlement, HoldRelease, batch_settle

logger = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=dt_timezone.utc)
DEPTH_LEVELS = 100  # the depth snapshot each batch publishes
_ENDED = (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REJECTED)
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
    "hold_amount", "stp_mode", "status", "maker_fee_rate", "taker_fee_rate", "cancel_requested",
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
    # The book as this batch left it, for publishing after its commit (the engine may
    # meanwhile run the next batch): bids and asks [(price ticks, lots)] to DEPTH_LEVELS,
    # the book's status and its last trade price.
    depth: tuple = ((), ())
    book_status: str = ""
    last_trade_price_ticks: int | None = None


@dataclass
class BatchPlan:
    """One batch run through the engine and translated, not yet written: everything
    ``BatchApplier.write`` needs, so that writing reads nothing of the in-memory book
    (the next batch may already be running through it)."""

    result: BatchResult
    amendment_outcomes: dict
    status_changes: dict
    status_outcomes: dict
    translation: TradeTranslation
    # order id -> what its hold must keep once the batch is applied (None: keep it whole,
    # an untriggered stop or an order no longer in the book); only for orders still open.
    hold_needs: dict
    # Final status and (price, quantity) after the batch of every order it changed: the
    # next batch, prepared before this one commits, reads its rows through these.
    status_now: dict
    terms_now: dict
    now: datetime
    start_sequence: int
    # Arguments built when the batch is prepared, off the writer thread: the orders'
    # update (``_order_update``) and the netted legs in Decimal (``_legs_as_amounts``).
    order_update: tuple = ((), {})
    legs: dict = field(default_factory=dict)

    @property
    def writes(self) -> bool:
        result = self.result
        return bool(result.order_changes or self.status_outcomes or result.sequence != self.start_sequence)


class BatchApplier:
    # Consulted once per batch with the users of its NEW orders: {user_id: reason} for
    # those whose new orders are rejected instead (kill switches, risk/gate.py).
    admission = staticmethod(admission_refusals)

    def __init__(self, market: Market, book: engine.OrderBook):
        self.market = market
        self.book = book
        self.units = MarketUnits.of(market)
        self.spec = MarketSpec.of(market)
        self.base_precision = market.base.precision
        self.quote_precision = market.quote.precision

    # ----------------------------------------------------------------- load

    def _load(self, commands: list[Command]):
        order_ids = {c.row_id for c in commands if c.kind in ("new", "cancel")}
        # Amendments, cancel-alls and status changes are rare: most batches ask
        # for none of them, and then the ORM is not even asked to build a query.
        amend_ids = [c.row_id for c in commands if c.kind == "amend"]
        amendments = {
            a.id: a for a in OrderAmendment.objects.filter(id__in=amend_ids, order__market=self.market)
        } if amend_ids else {}
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
        orders = self._load_orders(order_ids)
        status_ids = [c.row_id for c in commands if c.kind == "status"]
        status_changes = {
            s.id: s for s in MarketStatusChange.objects.filter(id__in=status_ids, market=self.market)
        } if status_ids else {}
        return orders, amendments, flagged_by_user, status_changes

    def _load_orders(self, order_ids) -> dict[int, dict]:
        """The batch's order rows (this market's only), by id: one index probe per id
        (see _LOCK_ORDERS for why not "= ANY"), bound on the server."""
        if not order_ids:
            return {}
        with server_cursor() as cursor:
            cursor.execute(_LOAD_ORDERS, [array_literal(sorted(order_ids)), self.market.id])
            return {row[0]: dict(zip(_ORDER_FIELDS, row)) for row in cursor.fetchall()}

    # ---------------------------------------------------------------- apply

    def apply(self, commands: list[Command]) -> BatchResult:
        """Run ``commands`` through the book and write them: one batch, nothing in flight."""
        plan = self.prepare(commands)
        if plan.writes:
            self.write(plan)
        return plan.result

    def prepare(self, commands: list[Command], *, after: BatchPlan | None = None) -> BatchPlan:
        """Load what ``commands`` refer to, run them through the book and translate the
        outcome: the batch's plan, which ``write`` commits. ``after`` is a batch run
        through the book but maybe not committed yet: its outcome overrides what this
        batch reads of the same rows, so a command is applied once even when its order
        changed in a transaction still in flight."""
        orders, amendments, flagged_by_user, status_changes = self._load(commands)
        decided = set()
        if after is not None:
            for order_id, row in orders.items():
                if order_id in after.status_now:
                    row["status"] = after.status_now[order_id]
                if order_id in after.terms_now:
                    row["price"], row["quantity"] = after.terms_now[order_id]
            decided = {("amend", amendment_id) for amendment_id in after.amendment_outcomes}
            decided |= {("status", change_id) for change_id in after.status_outcomes}
        result = BatchResult()
        # The batch's clock: every command it feeds the engine carries the time the
        # batch executes it, so trades, triggers and acceptances are stamped with
        # when they happened, not when the command was accepted (a command applied
        # after a recovery or by the sweep must not backdate its trades or rewrite
        # past candles).
        now = timezone.now()
        timestamp = to_micros(now)
        start_sequence = self.book.sequence
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
                elif row["cancel_requested"]:
                    self._cancel_unsequenced(row, changes, status_now)
                else:
                    run(self._new_order_command(row, timestamp))
            elif kind == "cancel":
                row = orders.get(command.row_id)
                current = status_now.get(command.row_id)
                if row is None or current not in OPEN_STATUSES or not row["cancel_requested"]:
                    # Only a cancel the database holds a request for is applied: a
                    # stream entry alone is not a request.
                    result.skipped += 1
                elif current == OrderStatus.PENDING:
                    self._cancel_unsequenced(row, changes, status_now)
                else:
                    run(engine.CancelOrder(order_id=row["id"], user_id=row["user_id"], timestamp=timestamp))
            elif kind == "amend":
                amendment = amendments.get(command.row_id)
                if (amendment is None or amendment.status != OrderAmendment.Status.REQUESTED
                        or amendment.id in amendment_outcomes or ("amend", amendment.id) in decided):
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
                        timestamp=timestamp,
                    ),
                    amendment_id=amendment.id,
                )
            elif kind == "status":
                request = status_changes.get(command.row_id)
                if (request is None or request.status != MarketStatusChange.Status.REQUESTED
                        or request.id in status_outcomes or ("status", request.id) in decided):
                    result.skipped += 1
                    continue
                run(engine.SetMarketStatus(status=request.new_status, timestamp=timestamp),
                    status_change_id=request.id)
            else:  # pragma: no cover - parse_command refuses unknown kinds
                raise ValueError(f"unknown command kind {kind!r}")

        result.order_changes = changes
        result.order_users = {order_id: row["user_id"] for order_id, row in orders.items()}
        result.sequence = self.book.sequence
        result.depth = self.book.depth(DEPTH_LEVELS)
        result.book_status = self.book.status
        result.last_trade_price_ticks = self.book.last_trade_price_ticks
        translation = translate_trades(result.trades, self._fee_rates(result.trades, orders), self.spec)
        for order_id, units in translation.base_fee_units_by_order.items():
            changes[order_id].fee_delta += self._base_amount(units)
        for order_id, units in translation.quote_fee_units_by_order.items():
            changes[order_id].fee_delta += self._quote_amount(units)
        return BatchPlan(
            result=result, amendment_outcomes=amendment_outcomes,
            status_changes=status_changes, status_outcomes=status_outcomes, translation=translation,
            hold_needs=self._hold_needs(changes),
            status_now={order_id: status_now[order_id] for order_id in changes if order_id in status_now},
            terms_now={order_id: terms_now[order_id] for order_id, change in changes.items()
                       if change.price is not None or change.quantity is not None},
            now=now, start_sequence=start_sequence,
            order_update=self._order_update(changes, now) if changes else ((), {}),
            legs=self._legs_as_amounts(translation.legs))

    def _expand(self, commands: list[Command], flagged_by_user: dict[int, list[int]]):
        for command in commands:
            if command.kind == "cancel_all":
                for order_id in flagged_by_user.get(command.row_id, []):
                    yield Command("cancel", order_id, command.entry_id)
            else:
                yield command

    def _new_order_command(self, row: dict, timestamp: int = 0) -> engine.NewOrder:
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
            timestamp=timestamp,
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

    def write(self, plan: BatchPlan) -> None:
        """The batch's one transaction: orders, trades and their events, candle, amendments and
        status changes, the market's fenced sequence, and one netted journal transaction.
        Reads nothing of the in-memory book (see ``prepare``).

        Write whenever the engine's sequence moved, even if no row changed (a cancel
        refused while the market is halted takes a sequence and changes nothing): the
        stored sequence must follow the engine's, or the next batch's fence fails for ever.

        Round trips for a batch with trades: 2 for the orders (lock, update + events), 1 for the
        trades and their events, 1 candle, 1 market state, 1 amendment read, ~7 in the ledger,
        and the commit. Never publishes anything: the caller does, after the commit.
        """
        market = self.market
        result, translation, now = plan.result, plan.translation, plan.now
        changes, amendment_outcomes, status_outcomes = plan.result.order_changes, plan.amendment_outcomes, plan.status_outcomes
        status_changes, start_sequence = plan.status_changes, plan.start_sequence
        with transaction.atomic():
            if changes:
                self._update_orders(*plan.order_update)
            # Only now, with the order rows locked: the amend service adds funds
            # and records its request under the same lock, so the requests read
            # here are exactly those whose funds the holds contain.
            releases = self._hold_true_ups(changes, amendment_outcomes, plan.hold_needs)
            if translation.sequence:
                self._insert_trades(translation, now)
                self._upsert_candle(candle_of(translation), now)
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
            last_price_ticks = translation.price_ticks[-1] if translation.sequence else None
            self._advance_market_state(start_sequence, result.sequence, last_price_ticks, now)
            if translation.legs or releases:
                batch_settle(settlement=BatchSettlement(
                    reference=f"match:{market.symbol}:{start_sequence + 1}:{result.sequence}",
                    legs=plan.legs,
                    releases=releases,
                    kind=TransactionKind.MATCH if translation.sequence else TransactionKind.RELEASE,
                    memo=f"{len(translation)} trades",  # check_ledger's batch_matches_trades reads it
                ))

    def _base_amount(self, units: int) -> Decimal:
        return EXACT.scaleb(Decimal(units), -self.base_precision)

    def _quote_amount(self, units: int) -> Decimal:
        return EXACT.scaleb(Decimal(units), -self.quote_precision)

    def _legs_as_amounts(self, legs: dict) -> dict:
        """The translation's netted legs in Decimal, holds named by reference: the ledger's edge."""
        base_id = self.market.base_id
        amounts = {}
        for (user_id, asset_id, kind, order_id), units in legs.items():
            amount = self._base_amount(units) if asset_id == base_id else self._quote_amount(units)
            amounts[(user_id, asset_id, kind, None if order_id is None else hold_reference(order_id))] = amount
        return amounts

    def _fee_rates(self, trades, orders) -> dict[int, tuple[tuple[int, int], tuple[int, int]]]:
        """(maker rate, taker rate) as exact fractions of every order in ``trades``;
        one query for those the batch did not load (resting makers, triggered stops)."""
        rates = {}
        missing = set()
        for trade in trades:
            for order_id in (trade.maker_order_id, trade.taker_order_id):
                if order_id in rates:
                    continue
                row = orders.get(order_id)
                if row is not None:
                    rates[order_id] = (rate_ratio(row["maker_fee_rate"]), rate_ratio(row["taker_fee_rate"]))
                else:
                    missing.add(order_id)
        if missing:
            with server_cursor() as cursor:
                cursor.execute(_FEE_RATES, [array_literal(sorted(missing))])
                for order_id, maker, taker in cursor.fetchall():
                    rates[order_id] = (rate_ratio(maker), rate_ratio(taker))
        return rates

    def _hold_needs(self, changes) -> dict:
        """What the hold of every order the batch leaves open must keep, from the book as
        the batch left it: price x remaining in quote for a buy, the remaining quantity
        in base for a sell (``orders.rules.hold_needed`` in integers, exact: market rules
        make a tick-lot a whole number of quote units); None for an untriggered stop or an
        order no longer in the book, whose hold is kept whole."""
        needs = {}
        for order_id, change in changes.items():
            if change.status in _ENDED:
                continue
            resting = self.book.open_order(order_id)
            if resting is None or resting.untriggered:
                needs[order_id] = None
            elif resting.side == engine.BUY:
                needs[order_id] = self._quote_amount(
                    resting.price_ticks * resting.quantity_lots_remaining * self.spec.quote_units_per_tick_lot)
            else:
                needs[order_id] = self._base_amount(resting.quantity_lots_remaining * self.spec.base_units_per_lot)
        return needs

    def _hold_true_ups(self, changes, amendment_outcomes, hold_needs) -> list[HoldRelease]:
        """Releases after the batch's settlements: every order that ended gives
        back what is left and closes its hold; every order still resting keeps
        exactly what its unfilled part needs (``hold_needs``), except while an
        amendment of it waits (its hold then also covers the new terms, see
        ``orders.rules.amend_hold_needed``)."""
        releases = []
        open_ids = []
        for order_id, change in changes.items():
            if change.status in _ENDED:
                releases.append(HoldRelease(reference=hold_reference(order_id), amount=None, close=True))
            else:
                open_ids.append(order_id)
        if not open_ids:
            return releases
        with server_cursor() as cursor:
            cursor.execute(_REQUESTED_AMENDMENTS, [array_literal(open_ids)])
            waiting = {order_id for amendment_id, order_id in cursor.fetchall()
                       if amendment_id not in amendment_outcomes}
        for order_id in sorted(open_ids):
            need = hold_needs[order_id]
            if need is not None and order_id not in waiting:
                releases.append(HoldRelease(reference=hold_reference(order_id), keep=need))
        return releases

    def _order_update(self, changes, now) -> tuple[list[int], dict]:
        """The changed orders' ids (ascending) and the arguments of their update, but
        for their row addresses: built when the batch is prepared, off the writer."""
        ids = sorted(changes)
        cols = {name: [] for name in (
            "status", "status_reason", "filled_lots", "filled_tl", "fee_delta", "accepted_sequence",
            "priority_sequence", "last_sequence", "triggered", "price", "quantity")}
        for order_id in ids:
            change = changes[order_id]
            cols["status"].append(change.status)
            cols["status_reason"].append(change.status_reason)
            cols["filled_lots"].append(change.filled_lots)
            cols["filled_tl"].append(change.filled_tl)
            cols["fee_delta"].append(change.fee_delta)
            cols["accepted_sequence"].append(change.accepted_sequence)
            cols["priority_sequence"].append(change.priority_sequence)
            cols["last_sequence"].append(change.last_sequence)
            cols["triggered"].append(change.triggered_at is not None)
            cols["price"].append(change.price)
            cols["quantity"].append(change.quantity)
        emit = self._order_event_flags([changes[order_id] for order_id in ids])
        market = self.market
        return ids, {
            "now": now, "status": cols["status"], "reason": cols["status_reason"],
            "lots": array_literal(cols["filled_lots"]), "tl": array_literal(cols["filled_tl"]),
            "fee": array_literal(cols["fee_delta"]), "accepted": array_literal(cols["accepted_sequence"]),
            "priority": array_literal(cols["priority_sequence"]), "last": array_literal(cols["last_sequence"]),
            "triggered": bool_literal(cols["triggered"]), "price": array_literal(cols["price"]),
            "quantity": array_literal(cols["quantity"]), "emit": bool_literal(emit),
            "step": market.step_size, "tick_lot": self.units.tick_lot,
            "topic": Topic.ORDERS.value, "symbol": market.symbol,
        }

    @staticmethod
    def _update_orders(ids: list[int], params: dict) -> None:
        """Lock the changed orders (ascending id), then update them and insert their
        ``order.updated`` events in one statement; fills travel as lots and tick-lots and
        PostgreSQL converts them to amounts. 2 round trips."""
        with server_cursor() as cursor:
            cursor.execute(_LOCK_ORDERS, [array_literal(ids)])
            rows = [row for (row,) in cursor.fetchall()]
            assert len(rows) == len(ids), "the batch's orders exist"
            cursor.execute(_UPDATE_ORDERS, {**params, "rows": tid_literal(rows)})

    @staticmethod
    def _order_event_flags(changes: list[_OrderChange]) -> list[bool]:
        """Which changes are an order event: not those the batch only touched
        (an amendment refused before the engine, whose hold is trued up)."""
        return [any(value is not None for value in (
            change.status, change.filled_lots, change.accepted_sequence, change.priority_sequence,
            change.last_sequence, change.price, change.quantity)) or bool(change.fee_delta)
            for change in changes]


    def _insert_trades(self, trades: TradeTranslation, now: datetime) -> None:
        """The trades, and one ``trade.executed`` event per trade in sequence order built
        from the inserted rows: one statement over server-bound arrays of integers
        (ticks, lots, fee units) that PostgreSQL converts to amounts. Every trade of
        the batch carries the batch's execution time."""
        market = self.market
        with server_cursor() as cursor:
            cursor.execute(_INSERT_TRADES, {
                "market": market.id, "now": now, "tick": market.tick_size, "step": market.step_size,
                "tick_lot": self.units.tick_lot, "base_unit": market.base.unit, "quote_unit": market.quote.unit,
                "sequence": array_literal(trades.sequence), "ticks": array_literal(trades.price_ticks),
                "lots": array_literal(trades.quantity_lots), "side": trades.taker_side,
                "maker_order": array_literal(trades.maker_order_id), "taker_order": array_literal(trades.taker_order_id),
                "maker_user": array_literal(trades.maker_user_id), "taker_user": array_literal(trades.taker_user_id),
                "maker_fee": array_literal(trades.maker_fee_units), "taker_fee": array_literal(trades.taker_fee_units),
                "topic": Topic.TRADES.value, "symbol": market.symbol,
                "base": market.base.code, "quote": market.quote.code,
            })
            assert cursor.rowcount == len(trades), "one trade.executed event per trade"

    def _upsert_candle(self, candle, now: datetime) -> None:
        """The batch's trades into their one-minute candle: one statement."""
        units = self.units
        table = Candle._meta.db_table
        with connection.cursor() as cursor:
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
                [self.market.pk, now.replace(second=0, microsecond=0), units.ticks_to_price(candle.open_ticks),
                 units.ticks_to_price(candle.high_ticks), units.ticks_to_price(candle.low_ticks),
                 units.ticks_to_price(candle.close_ticks), units.lots_to_quantity(candle.volume_lots),
                 units.tl_to_quote(candle.quote_volume_tl), candle.trade_count, candle.first_sequence,
                 candle.last_sequence],
            )

    def _advance_market_state(self, start_sequence: int, sequence: int, last_price_ticks: int | None,
                              now: datetime) -> None:
        """Move the market's sequence forward, fenced: the row must still hold the
        sequence this book started the batch from, or another writer exists."""
        last_price = None if last_price_ticks is None else self.units.ticks_to_price(last_price_ticks)
        with server_cursor() as cursor:
            cursor.execute(_ADVANCE_MARKET_STATE, {"market": self.market.id, "start": start_sequence,
                                                   "sequence": sequence, "price": last_price, "now": now})
            moved = cursor.rowcount
        if not moved:
            raise SequenceConflict(
                f"{self.market.symbol}: market state is not at sequence {start_sequence}; another matcher wrote it")


# One index probe per id, in ascending id order (the platform's lock order), FOR UPDATE on the
# single-table subquery: "= ANY(array)" of a thousand ids makes the planner scan the whole table,
# a cost that grows with the order history. The locked rows' addresses (ctid) cannot change
# before our own update, which then finds them by address, with no index, joining on ctid alone
# (as wallet.ledger does, which says why not "ctid = ANY(array)" as well).
_LOAD_ORDERS = f"""
    SELECT o.* FROM unnest(%s::bigint[]) AS k(id)
    CROSS JOIN LATERAL (
        SELECT {", ".join(_ORDER_FIELDS[:-1])}, cancel_requested_at IS NOT NULL
        FROM orders_order WHERE id = k.id AND market_id = %s
    ) o
"""

_FEE_RATES = """
    SELECT o.* FROM unnest(%s::bigint[]) AS k(id)
    CROSS JOIN LATERAL (SELECT id, maker_fee_rate, taker_fee_rate FROM orders_order WHERE id = k.id) o
"""

# Amendments still waiting on the given orders (read under the orders' locks, see _hold_true_ups).
_REQUESTED_AMENDMENTS = """
    SELECT a.* FROM unnest(%s::bigint[]) AS k(id)
    CROSS JOIN LATERAL (
        SELECT id, order_id FROM orders_orderamendment WHERE order_id = k.id AND status = 'REQUESTED'
    ) a
"""

# The fence: the row must still hold the sequence this book started the batch from.
_ADVANCE_MARKET_STATE = """
    UPDATE matching_marketstate
    SET last_sequence = %(sequence)s, last_price = COALESCE(%(price)s::numeric, last_price), updated_at = %(now)s
    WHERE market_id = %(market)s AND last_sequence = %(start)s
"""

_LOCK_ORDERS = """
    SELECT o.ctid FROM unnest(%s::bigint[]) WITH ORDINALITY AS k(id, n)
    CROSS JOIN LATERAL (SELECT ctid FROM orders_order WHERE id = k.id FOR UPDATE) o
    ORDER BY k.n
"""

_UPDATE_ORDERS = """
    WITH updated AS (
    UPDATE orders_order AS o SET
        status = COALESCE(v.status, o.status),
        status_reason = COALESCE(v.status_reason, o.status_reason),
        filled_quantity = COALESCE(v.filled_lots * %(step)s::numeric, o.filled_quantity),
        filled_notional = COALESCE(v.filled_tl * %(tick_lot)s::numeric, o.filled_notional),
        fee_total = o.fee_total + v.fee_delta,
        accepted_sequence = COALESCE(v.accepted_sequence, o.accepted_sequence),
        priority_sequence = COALESCE(v.priority_sequence, o.priority_sequence),
        last_sequence = COALESCE(v.last_sequence, o.last_sequence),
        triggered_at = CASE WHEN v.triggered THEN %(now)s ELSE o.triggered_at END,
        price = COALESCE(v.price, o.price),
        quantity = COALESCE(v.quantity, o.quantity),
        updated_at = %(now)s
    FROM unnest(%(rows)s::tid[], %(status)b::text[], %(reason)b::text[], %(lots)s::numeric[], %(tl)s::numeric[],
                %(fee)s::numeric[], %(accepted)s::bigint[], %(priority)s::bigint[], %(last)s::bigint[],
                %(triggered)s::boolean[], %(price)s::numeric[], %(quantity)s::numeric[], %(emit)s::boolean[])
        AS v(row, status, status_reason, filled_lots, filled_tl, fee_delta, accepted_sequence,
             priority_sequence, last_sequence, triggered, price, quantity, emit)
    WHERE o.ctid = v.row
    RETURNING o.*, v.emit
    )
    INSERT INTO exchange_outboxevent (topic, key, event_type, version, payload, sequence)
    SELECT %(topic)s::text, %(symbol)s::text, 'order.updated', 1, json_build_object(
        'order_id', u.id, 'client_order_id', u.client_order_id, 'user_id', u.user_id, 'market', %(symbol)s::text,
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
"""

_INSERT_TRADES = """
    WITH inserted AS (
        INSERT INTO orders_trade (market_id, sequence, price, quantity, notional, taker_side,
            maker_order_id, taker_order_id, maker_user_id, taker_user_id, maker_fee, taker_fee, executed_at)
        SELECT %(market)s, v.sequence, v.ticks * %(tick)s::numeric, v.lots * %(step)s::numeric,
               v.ticks * v.lots * %(tick_lot)s::numeric, v.side, v.maker_order, v.taker_order,
               v.maker_user, v.taker_user,
               v.maker_fee * CASE WHEN v.side = 'BUY' THEN %(quote_unit)s::numeric ELSE %(base_unit)s::numeric END,
               v.taker_fee * CASE WHEN v.side = 'BUY' THEN %(base_unit)s::numeric ELSE %(quote_unit)s::numeric END,
               %(now)s::timestamptz
        FROM unnest(%(sequence)s::bigint[], %(ticks)s::numeric[], %(lots)s::numeric[], %(side)b::text[],
                    %(maker_order)s::bigint[], %(taker_order)s::bigint[], %(maker_user)s::int[],
                    %(taker_user)s::int[], %(maker_fee)s::numeric[], %(taker_fee)s::numeric[])
            AS v(sequence, ticks, lots, side, maker_order, taker_order, maker_user, taker_user, maker_fee, taker_fee)
        RETURNING *
    )
    INSERT INTO exchange_outboxevent (topic, key, event_type, version, payload, sequence)
    SELECT %(topic)s::text, %(symbol)s::text, 'trade.executed', 1, json_build_object(
        'trade_id', t.id, 'market', %(symbol)s::text, 'sequence', t.sequence,
        'price', trim_scale(t.price)::text, 'quantity', trim_scale(t.quantity)::text,
        'notional', trim_scale(t.notional)::text, 'taker_side', t.taker_side,
        'maker_order_id', t.maker_order_id, 'taker_order_id', t.taker_order_id,
        'maker_user_id', t.maker_user_id, 'taker_user_id', t.taker_user_id,
        'maker_fee', trim_scale(t.maker_fee)::text,
        'maker_fee_asset', CASE WHEN t.taker_side = 'BUY' THEN %(quote)s::text ELSE %(base)s::text END,
        'taker_fee', trim_scale(t.taker_fee)::text,
        'taker_fee_asset', CASE WHEN t.taker_side = 'BUY' THEN %(base)s::text ELSE %(quote)s::text END,
        'executed_at', t.executed_at), t.sequence
    FROM inserted t
    ORDER BY t.sequence
"""
