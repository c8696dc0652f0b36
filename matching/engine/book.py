"""The order book and matcher of one market: ``events = book.apply(command)``.

Pure and deterministic: no I/O, no clock, no randomness. The same commands
applied to the same book (or to a book restored from its snapshot) produce the
same events. Prices are integer ticks, quantities integer lots, notional
amounts integer tick-lots; nothing here is a float. The contract (commands,
events, reason codes, semantics per order type) is docs/ENGINE.md.

Layout, chosen for speed in pure Python:

- Each side keeps a dict ``price_ticks -> _Level`` (O(1) lookup), the sorted
  prices in a ``SortedList`` (O(log n) insert/remove of a level) and its best
  price cached in an attribute (O(1) best bid/ask).
- A level is a doubly linked FIFO list of ``_Order`` (``__slots__``) with the
  aggregate ``quantity_lots``: O(1) append, O(1) removal from the front while
  matching and O(1) removal from anywhere on cancel.
- ``_orders`` maps ``order_id`` to the resting ``_Order`` or untriggered
  ``_Stop``: O(1) lookup by id.
- Untriggered stops live in two ``SortedList``s keyed by
  ``(stop_price_ticks, accepted_sequence)``: those that trigger when the last
  trade price rises to their stop, and those that trigger when it falls to it.
  The nearest stop price of each is cached, so the check after a command's
  trades is two integer comparisons.
- The matching loop, the hot path of the book, is one function with its state
  in local variables; events are named tuples built with ``tuple.__new__``.
  The sequence counter lives in ``self._sequence``; a method that emits loads
  it into a local and stores it back before it calls another emitting method
  and before it returns.
"""

from collections import deque
from typing import NamedTuple, Optional
from itertools import islice

from sortedcontainers import SortedList

from .commands import AmendOrder, CancelAll, CancelOrder, NewOrder, SetMarketStatus
from .enums import (
    BUY,
    CANCEL_ONLY,
    FOK,
    GTC,
    HALTED,
    IOC,
    LIMIT,
    LIMIT_MAKER,
    MARKET,
    MARKET_ORDER_TYPES,
    MARKET_STATUSES,
    NEW,
    ORDER_TYPES,
    POST_ONLY,
    PRICED_ORDER_TYPES,
    SELL,
    STOP_LOSS,
    STOP_LOSS_LIMIT,
    STOP_ORDER_TYPES,
    STP_EXPIRE_BOTH,
    STP_EXPIRE_MAKER,
    STP_EXPIRE_TAKER,
    STP_MODES,
    STP_NONE,
    TAKE_PROFIT,
    TIMES_IN_FORCE,
    TRADING,
    UNTRIGGERED,
    Reason,
)
from .events import (
    AmendRejected,
    BookDelta,
    CancelRejected,
    MarketStatusChanged,
    MarketStatusRejected,
    OrderAccepted,
    OrderAmended,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderPartiallyFilled,
    OrderRejected,
    OrderTriggered,
    Trade,
)

__all__ = ["OrderBook", "OpenOrder", "InvariantError", "SNAPSHOT_FORMAT", "ORDER_COLUMNS", "STOP_COLUMNS"]

_new = tuple.__new__

NO_LIQUIDITY = Reason.NO_LIQUIDITY
QUOTE_LIMIT_REACHED = Reason.QUOTE_LIMIT_REACHED
SELF_TRADE_PREVENTION = Reason.SELF_TRADE_PREVENTION

SNAPSHOT_FORMAT = "matching.engine.book/1"
# Columns of a resting order row in a snapshot's "bids" and "asks".
ORDER_COLUMNS = (
    "order_id",
    "user_id",
    "price_ticks",
    "quantity_lots_remaining",
    "quantity_lots_filled",
    "notional_tl_filled",
    "order_type",
    "stp_mode",
)
# Columns of an untriggered stop row in a snapshot's "stops".
STOP_COLUMNS = (
    "order_id",
    "user_id",
    "side",
    "order_type",
    "time_in_force",
    "price_ticks",
    "stop_price_ticks",
    "quantity_lots",
    "quote_limit_tl",
    "stp_mode",
    "accepted_sequence",
)


class OpenOrder(NamedTuple):
    """A read-only view of an order open in the book (``OrderBook.open_order``).

    For a resting order ``price_ticks`` is its limit price and
    ``quantity_lots_remaining`` what is still open. For an untriggered stop
    (``untriggered`` True) they are the stop's limit price (None for a
    STOP_LOSS / TAKE_PROFIT) and its whole quantity (None when it has only a
    quote limit).
    """

    order_id: int
    user_id: int
    side: str
    price_ticks: Optional[int]
    quantity_lots_remaining: Optional[int]
    untriggered: bool


class InvariantError(AssertionError):
    """The book's state is inconsistent: a bug, or a snapshot that lies."""


class _Level:
    """One price level: a FIFO doubly linked list of orders and their total."""

    __slots__ = ("price_ticks", "quantity_lots", "head", "tail")

    def __init__(self, price_ticks):
        self.price_ticks = price_ticks
        self.quantity_lots = 0
        self.head = None
        self.tail = None


class _Order:
    """A resting order. Its total quantity is remaining + filled."""

    __slots__ = (
        "order_id",
        "user_id",
        "side",
        "price_ticks",
        "quantity_lots_remaining",
        "quantity_lots_filled",
        "notional_tl_filled",
        "order_type",
        "stp_mode",
        "level",
        "prev",
        "next",
    )

    def __init__(
        self,
        order_id,
        user_id,
        side,
        price_ticks,
        quantity_lots_remaining,
        quantity_lots_filled,
        notional_tl_filled,
        order_type,
        stp_mode,
    ):
        self.order_id = order_id
        self.user_id = user_id
        self.side = side
        self.price_ticks = price_ticks
        self.quantity_lots_remaining = quantity_lots_remaining
        self.quantity_lots_filled = quantity_lots_filled
        self.notional_tl_filled = notional_tl_filled
        self.order_type = order_type
        self.stp_mode = stp_mode
        # level, prev and next are set when the order is linked into a level.


class _Stop:
    """An untriggered stop order, as accepted (absent values are None)."""

    __slots__ = (*STOP_COLUMNS, "triggers_on_rise")

    def __init__(
        self,
        order_id,
        user_id,
        side,
        order_type,
        time_in_force,
        price_ticks,
        stop_price_ticks,
        quantity_lots,
        quote_limit_tl,
        stp_mode,
        accepted_sequence,
    ):
        self.order_id = order_id
        self.user_id = user_id
        self.side = side
        self.order_type = order_type
        self.time_in_force = time_in_force
        self.price_ticks = price_ticks
        self.stop_price_ticks = stop_price_ticks
        self.quantity_lots = quantity_lots
        self.quote_limit_tl = quote_limit_tl
        self.stp_mode = stp_mode
        self.accepted_sequence = accepted_sequence
        # STOP_LOSS* BUY and TAKE_PROFIT* SELL trigger when the last price
        # rises to the stop (P >= stop); the other two when it falls (P <= stop).
        is_stop_loss = order_type == STOP_LOSS or order_type == STOP_LOSS_LIMIT
        self.triggers_on_rise = (side == BUY) == is_stop_loss

    def key(self):
        return (self.stop_price_ticks, self.accepted_sequence, self)


class _Side:
    """One side of the book: levels by price, sorted prices, cached best price."""

    __slots__ = ("side", "is_bid", "levels", "prices", "best_price_ticks")

    def __init__(self, side):
        self.side = side
        self.is_bid = side == BUY
        self.levels = {}
        self.prices = SortedList()
        self.best_price_ticks = None

    def add_level(self, price_ticks):
        level = _Level(price_ticks)
        self.levels[price_ticks] = level
        self.prices.add(price_ticks)
        best = self.best_price_ticks
        if best is None or (price_ticks > best if self.is_bid else price_ticks < best):
            self.best_price_ticks = price_ticks
        return level

    def remove_level(self, price_ticks):
        del self.levels[price_ticks]
        prices = self.prices
        prices.remove(price_ticks)
        if price_ticks == self.best_price_ticks:
            if prices:
                self.best_price_ticks = prices[-1] if self.is_bid else prices[0]
            else:
                self.best_price_ticks = None

    def prices_best_first(self):
        return reversed(self.prices) if self.is_bid else iter(self.prices)


def _is_positive_int(value):
    return type(value) is int and value > 0


def _is_absent(value):
    return value is None or (type(value) is int and value == 0)


def _check_new_order(
    order_id,
    user_id,
    side,
    order_type,
    time_in_force,
    price_ticks,
    stop_price_ticks,
    quantity_lots,
    quote_limit_tl,
    stp_mode,
):
    """Return the reason a NEW command is malformed, or None. The checks run
    in this order, so a command with several faults gets the first reason."""
    if type(order_id) is not int or order_id <= 0:
        return Reason.INVALID_ORDER_ID
    if type(user_id) is not int or user_id <= 0:
        return Reason.INVALID_USER_ID
    if side != BUY and side != SELL:
        return Reason.INVALID_SIDE
    if type(order_type) is not str or order_type not in ORDER_TYPES:
        return Reason.INVALID_ORDER_TYPE
    if order_type in PRICED_ORDER_TYPES:
        if order_type == LIMIT_MAKER:
            if time_in_force != GTC:
                return Reason.INVALID_TIME_IN_FORCE
        elif type(time_in_force) is not str or time_in_force not in TIMES_IN_FORCE:
            return Reason.INVALID_TIME_IN_FORCE
        if type(price_ticks) is not int or price_ticks <= 0:
            return Reason.INVALID_PRICE
    elif not _is_absent(price_ticks):
        return Reason.INVALID_PRICE
    if order_type in STOP_ORDER_TYPES:
        if type(stop_price_ticks) is not int or stop_price_ticks <= 0:
            return Reason.INVALID_STOP_PRICE
    elif not _is_absent(stop_price_ticks):
        return Reason.INVALID_STOP_PRICE
    if order_type in PRICED_ORDER_TYPES:
        if type(quantity_lots) is not int or quantity_lots <= 0:
            return Reason.INVALID_QUANTITY
        if not _is_absent(quote_limit_tl):
            return Reason.INVALID_QUOTE_LIMIT
    else:
        if not (_is_absent(quantity_lots) or _is_positive_int(quantity_lots)):
            return Reason.INVALID_QUANTITY
        if not (_is_absent(quote_limit_tl) or _is_positive_int(quote_limit_tl)):
            return Reason.INVALID_QUOTE_LIMIT
        if not quantity_lots and not quote_limit_tl:
            return Reason.QUANTITY_OR_QUOTE_LIMIT_REQUIRED
    if stp_mode is not None and (type(stp_mode) is not str or stp_mode not in STP_MODES):
        return Reason.INVALID_STP_MODE
    return None


def _accepted_sequence_of(entry):
    return entry[1]


class OrderBook:
    """The order book of one market. See docs/ENGINE.md for the contract.

    ``OrderBook(symbol, *, stp_default=EXPIRE_TAKER, status=TRADING)``.
    ``apply(command)`` is the only way to change it; it returns the events
    the command caused (possibly none, e.g. CANCEL_ALL of a user with no open
    orders). A refused command is an event with a reason, never an exception;
    only a command of an unknown type raises (TypeError: a programmer error).
    """

    def __init__(self, symbol, *, stp_default=STP_EXPIRE_TAKER, status=TRADING):
        if stp_default not in STP_MODES:
            raise ValueError(f"unknown stp_default {stp_default!r}")
        if status not in MARKET_STATUSES:
            raise ValueError(f"unknown status {status!r}")
        self.symbol = symbol
        self.stp_default = stp_default
        self._status = status
        # The sequence of the last event emitted; the next event gets +1.
        self._sequence = 0
        self._last_price = None
        self._bids = _Side(BUY)
        self._asks = _Side(SELL)
        self._orders = {}
        self._stops_rise = SortedList()
        self._stops_fall = SortedList()
        # Nearest stop prices: min of _stops_rise, max of _stops_fall (None: no stops).
        self._stop_rise_min = None
        self._stop_fall_max = None
        self._handlers = {
            NewOrder: self._on_new_order,
            CancelOrder: self._on_cancel,
            CancelAll: self._on_cancel_all,
            AmendOrder: self._on_amend,
            SetMarketStatus: self._on_set_market_status,
        }

    # ------------------------------------------------------------------ reads

    @property
    def status(self):
        """The market status: TRADING, HALTED, CANCEL_ONLY or POST_ONLY."""
        return self._status

    @property
    def sequence(self):
        """The sequence of the last event emitted (0 before the first)."""
        return self._sequence

    @property
    def last_trade_price_ticks(self):
        """The price of the market's last trade, or None before the first."""
        return self._last_price

    def best_bid(self):
        """The highest bid price in ticks, or None. O(1)."""
        return self._bids.best_price_ticks

    def best_ask(self):
        """The lowest ask price in ticks, or None. O(1)."""
        return self._asks.best_price_ticks

    def depth(self, n=None):
        """Aggregated depth: ``(bids, asks)``, each a list of
        ``(price_ticks, quantity_lots)`` best first, at most ``n`` levels per
        side (all levels when n is None). O(n)."""
        result = []
        for book_side in (self._bids, self._asks):
            levels = book_side.levels
            prices = book_side.prices_best_first()
            if n is not None:
                prices = islice(prices, n)
            result.append([(price, levels[price].quantity_lots) for price in prices])
        return result[0], result[1]

    def open_order(self, order_id):
        """The open order ``order_id`` as an ``OpenOrder``, or None. O(1)."""
        order = self._orders.get(order_id)
        if order is None:
            return None
        if type(order) is _Stop:
            return OpenOrder(order.order_id, order.user_id, order.side, order.price_ticks, order.quantity_lots, True)
        return OpenOrder(order.order_id, order.user_id, order.side, order.price_ticks, order.quantity_lots_remaining,
                         False)

    def __contains__(self, order_id):
        """Whether ``order_id`` is open here (resting or an untriggered stop)."""
        return order_id in self._orders

    def __len__(self):
        """The number of open orders (resting plus untriggered stops)."""
        return len(self._orders)

    # --------------------------------------------------------------- commands

    def apply(self, command):
        """Apply one command and return the list of events it caused, in order.

        Every event gets the next sequence number. BOOK_DELTA events, one per
        changed level, come after the command's other events.
        """
        handler = self._handlers.get(command.__class__)
        if handler is None:
            raise TypeError(f"not an engine command: {command!r}")
        return handler(command)

    def _on_new_order(self, command):
        (
            order_id,
            user_id,
            side,
            order_type,
            time_in_force,
            price_ticks,
            stop_price_ticks,
            quantity_lots,
            quote_limit_tl,
            stp_mode,
            timestamp,
        ) = command
        if (
            # Most commands are well-formed limit orders: one expression
            # proves it without the full checker's call and set lookups.
            order_type == LIMIT
            and type(order_id) is int
            and order_id > 0
            and type(user_id) is int
            and user_id > 0
            and (side == BUY or side == SELL)
            and (time_in_force == GTC or time_in_force == IOC or time_in_force == FOK)
            and type(price_ticks) is int
            and price_ticks > 0
            and type(quantity_lots) is int
            and quantity_lots > 0
            and stop_price_ticks is None
            and quote_limit_tl is None
            and stp_mode is None
        ):
            reason = None
        else:
            reason = _check_new_order(
                order_id,
                user_id,
                side,
                order_type,
                time_in_force,
                price_ticks,
                stop_price_ticks,
                quantity_lots,
                quote_limit_tl,
                stp_mode,
            )
        if reason is None and order_id in self._orders:
            reason = Reason.DUPLICATE_ORDER_ID
        status = self._status
        if reason is None and status != TRADING:
            if status == HALTED:
                reason = Reason.MARKET_HALTED
            elif status == CANCEL_ONLY:
                reason = Reason.MARKET_CANCEL_ONLY
            elif order_type != LIMIT and order_type != LIMIT_MAKER:
                reason = Reason.MARKET_POST_ONLY
        if reason is not None:
            seq = self._sequence + 1
            self._sequence = seq
            return [_new(OrderRejected, (seq, timestamp, order_id, user_id, reason, 0, 0))]
        if stp_mode is None:
            stp_mode = self.stp_default

        if order_type == LIMIT or order_type == LIMIT_MAKER:
            return self._new_limit(
                order_id, user_id, side, order_type, time_in_force, price_ticks, quantity_lots, stp_mode,
                timestamp, status,
            )
        # 0 means absent, as None does; events say None.
        quantity_lots = quantity_lots or None
        quote_limit_tl = quote_limit_tl or None
        if order_type == MARKET:
            return self._new_market(order_id, user_id, side, quantity_lots, quote_limit_tl, stp_mode, timestamp)
        return self._new_stop(
            order_id, user_id, side, order_type, time_in_force, price_ticks, stop_price_ticks, quantity_lots,
            quote_limit_tl, stp_mode, timestamp,
        )

    def _new_limit(
        self, order_id, user_id, side, order_type, time_in_force, price_ticks, quantity_lots, stp_mode,
        timestamp, status,
    ):
        """LIMIT (GTC, IOC, FOK) and LIMIT_MAKER, already validated."""
        if side == BUY:
            best = self._asks.best_price_ticks
            crosses = best is not None and best <= price_ticks
        else:
            best = self._bids.best_price_ticks
            crosses = best is not None and best >= price_ticks
        seq = self._sequence + 1
        if crosses and (order_type == LIMIT_MAKER or status == POST_ONLY):
            self._sequence = seq
            return [_new(OrderRejected, (seq, timestamp, order_id, user_id, Reason.POST_ONLY_WOULD_TAKE, 0, 0))]
        events = [
            _new(
                OrderAccepted,
                (
                    seq,
                    timestamp,
                    order_id,
                    user_id,
                    side,
                    order_type,
                    time_in_force,
                    price_ticks,
                    None,
                    quantity_lots,
                    None,
                    stp_mode,
                    NEW,
                ),
            )
        ]
        if not crosses and time_in_force == GTC:
            # The most frequent case: a limit order that rests untouched.
            level = self._rest(
                _Order(order_id, user_id, side, price_ticks, quantity_lots, 0, 0, order_type, stp_mode), None
            )
            seq += 1
            events.append(_new(BookDelta, (seq, timestamp, side, price_ticks, level.quantity_lots)))
            self._sequence = seq
            return events
        self._sequence = seq
        touched = {}
        self._execute(
            events, touched, order_id, user_id, side, order_type, time_in_force, price_ticks, quantity_lots,
            None, stp_mode, timestamp, 0, 0,
        )
        self._after_matching(events, touched, timestamp)
        return events

    def _new_market(self, order_id, user_id, side, quantity_lots, quote_limit_tl, stp_mode, timestamp):
        """MARKET, already validated: never rests."""
        seq = self._sequence + 1
        self._sequence = seq
        events = [
            _new(
                OrderAccepted,
                (
                    seq,
                    timestamp,
                    order_id,
                    user_id,
                    side,
                    MARKET,
                    None,
                    None,
                    None,
                    quantity_lots,
                    quote_limit_tl,
                    stp_mode,
                    NEW,
                ),
            )
        ]
        touched = {}
        self._execute(
            events, touched, order_id, user_id, side, MARKET, None, None, quantity_lots, quote_limit_tl,
            stp_mode, timestamp, 0, 0,
        )
        self._after_matching(events, touched, timestamp)
        return events

    def _new_stop(
        self, order_id, user_id, side, order_type, time_in_force, price_ticks, stop_price_ticks, quantity_lots,
        quote_limit_tl, stp_mode, timestamp,
    ):
        """The four stop types, already validated: rejected if the last trade
        price already meets the trigger condition, else kept untriggered."""
        seq = self._sequence + 1
        self._sequence = seq
        is_stop_loss = order_type == STOP_LOSS or order_type == STOP_LOSS_LIMIT
        triggers_on_rise = (side == BUY) == is_stop_loss
        last = self._last_price
        if last is not None and (last >= stop_price_ticks if triggers_on_rise else last <= stop_price_ticks):
            return [
                _new(OrderRejected, (seq, timestamp, order_id, user_id, Reason.WOULD_TRIGGER_IMMEDIATELY, 0, 0))
            ]
        if order_type == STOP_LOSS or order_type == TAKE_PROFIT:
            # They execute as MARKET orders: no price, no time in force.
            time_in_force = None
            price_ticks = None
        self._add_stop(
            _Stop(
                order_id, user_id, side, order_type, time_in_force, price_ticks, stop_price_ticks, quantity_lots,
                quote_limit_tl, stp_mode, seq,
            )
        )
        return [
            _new(
                OrderAccepted,
                (
                    seq,
                    timestamp,
                    order_id,
                    user_id,
                    side,
                    order_type,
                    time_in_force,
                    price_ticks,
                    stop_price_ticks,
                    quantity_lots,
                    quote_limit_tl,
                    stp_mode,
                    UNTRIGGERED,
                ),
            )
        ]

    def _on_cancel(self, command):
        order_id, user_id, timestamp = command
        seq = self._sequence + 1
        self._sequence = seq
        if self._status == HALTED:
            return [_new(CancelRejected, (seq, timestamp, order_id, user_id, Reason.MARKET_HALTED))]
        order = self._orders.get(order_id) if type(order_id) is int else None
        if order is None or order.user_id != user_id:
            return [_new(CancelRejected, (seq, timestamp, order_id, user_id, Reason.UNKNOWN_ORDER))]
        del self._orders[order_id]
        if order.__class__ is _Stop:
            self._remove_stop(order)
            return [_new(OrderCanceled, (seq, timestamp, order_id, user_id, 0, 0, Reason.CANCEL))]
        level = self._unlink(order)
        self._sequence = seq + 1
        return [
            _new(
                OrderCanceled,
                (
                    seq,
                    timestamp,
                    order_id,
                    user_id,
                    order.quantity_lots_filled,
                    order.notional_tl_filled,
                    Reason.CANCEL,
                ),
            ),
            _new(BookDelta, (seq + 1, timestamp, order.side, order.price_ticks, level.quantity_lots)),
        ]

    def _on_cancel_all(self, command):
        user_id, timestamp = command
        if self._status == HALTED:
            seq = self._sequence + 1
            self._sequence = seq
            return [_new(CancelRejected, (seq, timestamp, None, user_id, Reason.MARKET_HALTED))]
        orders = self._orders
        # Ascending order_id: independent of how the book was built (restore).
        mine = sorted(order_id for order_id, order in orders.items() if order.user_id == user_id)
        events = []
        touched = {}
        seq = self._sequence
        for order_id in mine:
            order = orders.pop(order_id)
            if order.__class__ is _Stop:
                self._remove_stop(order)
                filled = notional = 0
            else:
                level = order.level
                key = -level.price_ticks if order.side == BUY else level.price_ticks
                if key not in touched:
                    touched[key] = level.quantity_lots
                self._unlink(order)
                filled = order.quantity_lots_filled
                notional = order.notional_tl_filled
            seq += 1
            events.append(
                _new(
                    OrderCanceled,
                    (seq, timestamp, order_id, user_id, filled, notional, Reason.CANCEL_ALL),
                )
            )
        self._sequence = seq
        self._emit_book_deltas(events, touched, timestamp)
        return events

    def _on_amend(self, command):
        order_id, user_id, new_price_ticks, new_quantity_lots, timestamp = command
        status = self._status
        order = None
        if status == HALTED:
            reason = Reason.MARKET_HALTED
        elif status == CANCEL_ONLY:
            reason = Reason.MARKET_CANCEL_ONLY
        else:
            order = self._orders.get(order_id) if type(order_id) is int else None
            if order is None or order.user_id != user_id:
                reason = Reason.UNKNOWN_ORDER
            elif order.__class__ is _Stop:
                reason = Reason.AMEND_NOT_SUPPORTED
            elif new_price_ticks is not None and not _is_positive_int(new_price_ticks):
                reason = Reason.INVALID_PRICE
            elif new_quantity_lots is not None and not _is_positive_int(new_quantity_lots):
                reason = Reason.INVALID_QUANTITY
            elif new_price_ticks is None and new_quantity_lots is None:
                reason = Reason.NOTHING_TO_AMEND
            elif new_quantity_lots is not None and new_quantity_lots <= order.quantity_lots_filled:
                reason = Reason.QUANTITY_NOT_ABOVE_FILLED
            else:
                reason = None
        seq = self._sequence + 1
        if reason is not None:
            self._sequence = seq
            return [_new(AmendRejected, (seq, timestamp, order_id, user_id, reason))]

        side = order.side
        old_price_ticks = order.price_ticks
        filled = order.quantity_lots_filled
        old_total_lots = order.quantity_lots_remaining + filled
        price_ticks = old_price_ticks if new_price_ticks is None else new_price_ticks
        total_lots = old_total_lots if new_quantity_lots is None else new_quantity_lots
        remaining_lots = total_lots - filled
        if price_ticks == old_price_ticks and total_lots == old_total_lots:
            self._sequence = seq
            return [_new(AmendRejected, (seq, timestamp, order_id, user_id, Reason.NOTHING_TO_AMEND))]

        if price_ticks == old_price_ticks and total_lots < old_total_lots:
            # Same price, quantity down: the order keeps its place in the queue.
            level = order.level
            level.quantity_lots -= order.quantity_lots_remaining - remaining_lots
            order.quantity_lots_remaining = remaining_lots
            self._sequence = seq + 1
            return [
                _new(
                    OrderAmended,
                    (seq, timestamp, order_id, user_id, price_ticks, total_lots, remaining_lots, True),
                ),
                _new(BookDelta, (seq + 1, timestamp, side, price_ticks, level.quantity_lots)),
            ]

        if side == BUY:
            best = self._asks.best_price_ticks
            crosses = best is not None and best <= price_ticks
        else:
            best = self._bids.best_price_ticks
            crosses = best is not None and best >= price_ticks
        if crosses and (order.order_type == LIMIT_MAKER or status == POST_ONLY):
            self._sequence = seq
            return [
                _new(AmendRejected, (seq, timestamp, order_id, user_id, Reason.POST_ONLY_WOULD_TAKE))
            ]

        # Price change or quantity up: the order leaves its place and re-enters
        # at the back of its (new) level, as a taker first if it now crosses.
        level = order.level
        touched = {(-old_price_ticks if side == BUY else old_price_ticks): level.quantity_lots}
        self._unlink(order)
        events = [
            _new(
                OrderAmended,
                (seq, timestamp, order_id, user_id, price_ticks, total_lots, remaining_lots, False),
            )
        ]
        self._sequence = seq
        if not crosses:
            order.price_ticks = price_ticks
            order.quantity_lots_remaining = remaining_lots
            self._rest(order, touched)
        else:
            del self._orders[order_id]
            self._execute(
                events,
                touched,
                order_id,
                user_id,
                side,
                order.order_type,
                GTC,
                price_ticks,
                total_lots,
                None,
                order.stp_mode,
                timestamp,
                filled,
                order.notional_tl_filled,
            )
        self._after_matching(events, touched, timestamp)
        return events

    def _on_set_market_status(self, command):
        status, timestamp = command
        seq = self._sequence + 1
        self._sequence = seq
        if type(status) is not str or status not in MARKET_STATUSES:
            return [_new(MarketStatusRejected, (seq, timestamp, status, Reason.INVALID_STATUS))]
        previous = self._status
        self._status = status
        return [_new(MarketStatusChanged, (seq, timestamp, status, previous))]

    # --------------------------------------------------------------- matching

    def _execute(
        self,
        events,
        touched,
        order_id,
        user_id,
        side,
        order_type,
        time_in_force,
        price_ticks,
        quantity_lots,
        quote_limit_tl,
        stp_mode,
        timestamp,
        filled_lots,
        notional_tl,
    ):
        """Run an accepted (or triggered, or re-priced) order as a taker, then
        settle it: FILLED, EXPIRED, or rest its remainder (GTC limit).

        ``price_ticks`` None means MARKET semantics: fill while the quantity
        (if given) and the quote limit (if given) allow. Otherwise LIMIT
        semantics with ``time_in_force`` on ``quantity_lots`` (the total,
        of which ``filled_lots`` already filled, for an amended order).
        """
        if price_ticks is None:
            # A MARKET order. Without a quantity, the quote limit bounds the
            # lots it can get (every price is at least one tick).
            bound_lots = quantity_lots if quantity_lots is not None else quote_limit_tl
            remaining, filled_lots, notional_tl, reason = self._take(
                events, touched, order_id, user_id, side, None, bound_lots, quote_limit_tl,
                stp_mode, timestamp, 0, 0,
            )
            seq = self._sequence + 1
            self._sequence = seq
            if (quantity_lots is not None and not remaining) or notional_tl == quote_limit_tl:
                events.append(_new(OrderFilled, (seq, timestamp, order_id, user_id, filled_lots, notional_tl)))
            else:
                events.append(
                    _new(OrderExpired, (seq, timestamp, order_id, user_id, filled_lots, notional_tl, reason))
                )
            return

        remaining = quantity_lots - filled_lots
        if time_in_force == FOK and not self._fok_fillable(side, price_ticks, remaining, user_id, stp_mode):
            seq = self._sequence + 1
            self._sequence = seq
            events.append(
                _new(
                    OrderExpired,
                    (seq, timestamp, order_id, user_id, filled_lots, notional_tl, Reason.FOK_NOT_FILLABLE),
                )
            )
            return
        filled_before = filled_lots
        remaining, filled_lots, notional_tl, reason = self._take(
            events, touched, order_id, user_id, side, price_ticks, remaining, None,
            stp_mode, timestamp, filled_lots, notional_tl,
        )
        if time_in_force == GTC and remaining and reason != SELF_TRADE_PREVENTION:
            # The remainder rests; a PARTIALLY_FILLED tells about new fills.
            self._rest(
                _Order(order_id, user_id, side, price_ticks, remaining, filled_lots, notional_tl, order_type, stp_mode),
                touched,
            )
            if filled_lots != filled_before:
                seq = self._sequence + 1
                self._sequence = seq
                events.append(
                    _new(
                        OrderPartiallyFilled,
                        (seq, timestamp, order_id, user_id, filled_lots, notional_tl, remaining),
                    )
                )
            return
        seq = self._sequence + 1
        self._sequence = seq
        if not remaining:
            events.append(_new(OrderFilled, (seq, timestamp, order_id, user_id, filled_lots, notional_tl)))
        else:
            if reason != SELF_TRADE_PREVENTION:
                assert time_in_force == IOC, "a FOK order that passed its check fills completely"
                reason = Reason.IOC_REMAINDER
            events.append(
                _new(OrderExpired, (seq, timestamp, order_id, user_id, filled_lots, notional_tl, reason))
            )

    def _take(
        self,
        events,
        touched,
        order_id,
        user_id,
        side,
        limit_price_ticks,
        remaining,
        quote_left_tl,
        stp_mode,
        timestamp,
        filled_lots,
        notional_tl,
    ):
        """Match a taker against the opposite side: best price first, FIFO
        within a level, each trade at the maker's price.

        Stops when ``remaining`` is 0, when the next price is beyond
        ``limit_price_ticks`` (None: no limit), when ``quote_left_tl`` (None:
        no cap) cannot pay one more lot at the next price, when the opposite
        side is empty, or when self-trade prevention ends the taker. Makers
        the taker meets get their TRADE and FILLED/PARTIALLY_FILLED events
        (or EXPIRED by self-trade prevention); the taker's own status is
        left to the caller.

        Returns ``(remaining, filled_lots, notional_tl, reason)``, the totals
        including the ``filled_lots``/``notional_tl`` passed in; ``reason`` is
        None when the quantity ran out or the limit price stopped the taker,
        else NO_LIQUIDITY, QUOTE_LIMIT_REACHED or SELF_TRADE_PREVENTION.
        """
        if side == BUY:
            book_side = self._asks
            opposite_is_bid = False
        else:
            book_side = self._bids
            opposite_is_bid = True
        levels = book_side.levels
        best = book_side.best_price_ticks
        orders = self._orders
        append = events.append
        seq = self._sequence
        check_self = stp_mode != STP_NONE
        last_price = None
        reason = None
        while remaining:
            if best is None:
                reason = NO_LIQUIDITY
                break
            price = best
            if limit_price_ticks is not None and (
                price < limit_price_ticks if opposite_is_bid else price > limit_price_ticks
            ):
                break
            level = levels[price]
            key = -price if opposite_is_bid else price
            if key not in touched:
                touched[key] = level.quantity_lots
            maker = level.head
            while maker is not None:
                # The quote limit is checked before self-trade prevention: an
                # order that cannot pay one more lot is done and expires no one.
                if quote_left_tl is not None and quote_left_tl < price:
                    reason = QUOTE_LIMIT_REACHED
                    break
                if check_self and maker.user_id == user_id:
                    if stp_mode == STP_EXPIRE_TAKER:
                        reason = SELF_TRADE_PREVENTION
                        break
                    # EXPIRE_MAKER or EXPIRE_BOTH: the maker (the level's head) goes.
                    following = maker.next
                    level.head = following
                    if following is None:
                        level.tail = None
                    else:
                        following.prev = None
                    level.quantity_lots -= maker.quantity_lots_remaining
                    del orders[maker.order_id]
                    seq += 1
                    append(
                        _new(
                            OrderExpired,
                            (
                                seq,
                                timestamp,
                                maker.order_id,
                                user_id,
                                maker.quantity_lots_filled,
                                maker.notional_tl_filled,
                                SELF_TRADE_PREVENTION,
                            ),
                        )
                    )
                    if stp_mode == STP_EXPIRE_BOTH:
                        reason = SELF_TRADE_PREVENTION
                        break
                    maker = following
                    continue

                maker_remaining = maker.quantity_lots_remaining
                lots = maker_remaining if maker_remaining < remaining else remaining
                if quote_left_tl is not None:
                    affordable = quote_left_tl // price
                    if affordable < lots:
                        lots = affordable
                    quote_left_tl -= lots * price
                trade_notional = lots * price
                maker_id = maker.order_id
                maker_user_id = maker.user_id
                seq += 1
                append(
                    _new(
                        Trade,
                        (seq, timestamp, price, lots, maker_id, maker_user_id, order_id, user_id, side),
                    )
                )
                remaining -= lots
                filled_lots += lots
                notional_tl += trade_notional
                level.quantity_lots -= lots
                last_price = price
                maker_remaining -= lots
                maker_filled = maker.quantity_lots_filled + lots
                maker_notional = maker.notional_tl_filled + trade_notional
                seq += 1
                if maker_remaining:
                    maker.quantity_lots_remaining = maker_remaining
                    maker.quantity_lots_filled = maker_filled
                    maker.notional_tl_filled = maker_notional
                    append(
                        _new(
                            OrderPartiallyFilled,
                            (seq, timestamp, maker_id, maker_user_id, maker_filled, maker_notional, maker_remaining),
                        )
                    )
                    if not remaining:
                        break
                    # Only the quote limit leaves both open: the next pass stops.
                    continue
                append(_new(OrderFilled, (seq, timestamp, maker_id, maker_user_id, maker_filled, maker_notional)))
                del orders[maker_id]
                maker = maker.next
                level.head = maker
                if maker is None:
                    level.tail = None
                else:
                    maker.prev = None
                if not remaining:
                    break

            if level.head is None:
                del levels[price]
                prices = book_side.prices
                if opposite_is_bid:
                    prices.pop()
                    best = prices[-1] if prices else None
                else:
                    prices.pop(0)
                    best = prices[0] if prices else None
            if reason is not None:
                break
        book_side.best_price_ticks = best
        self._sequence = seq
        if last_price is not None:
            self._last_price = last_price
        return remaining, filled_lots, notional_tl, reason

    def _fok_fillable(self, side, limit_price_ticks, quantity_lots, user_id, stp_mode):
        """Whether matching this FOK order as IOC would fill it completely,
        with self-trade prevention exactly as ``_take`` applies it: a maker of
        the same user ends the taker (EXPIRE_TAKER, EXPIRE_BOTH), is skipped
        (EXPIRE_MAKER, it would be expired) or counts (NONE). Reads only."""
        book_side = self._asks if side == BUY else self._bids
        levels = book_side.levels
        needed = quantity_lots
        for price in book_side.prices_best_first():
            if price > limit_price_ticks if side == BUY else price < limit_price_ticks:
                return False
            level = levels[price]
            if stp_mode == STP_NONE:
                if level.quantity_lots >= needed:
                    return True
                needed -= level.quantity_lots
                continue
            maker = level.head
            while maker is not None:
                if maker.user_id == user_id:
                    if stp_mode != STP_EXPIRE_MAKER:
                        return False
                else:
                    if maker.quantity_lots_remaining >= needed:
                        return True
                    needed -= maker.quantity_lots_remaining
                maker = maker.next
        return False

    def _after_matching(self, events, touched, timestamp):
        """Run the stops the command's trades triggered, then emit BOOK_DELTAs."""
        last = self._last_price
        if last is not None and (
            (self._stop_rise_min is not None and last >= self._stop_rise_min)
            or (self._stop_fall_max is not None and last <= self._stop_fall_max)
        ):
            self._run_triggered_stops(events, touched, timestamp)
        self._emit_book_deltas(events, touched, timestamp)

    def _run_triggered_stops(self, events, touched, timestamp):
        """Trigger and execute stops, one at a time, until none is triggered.

        Stops whose condition holds at the current last trade price trigger
        together, queued by accepted sequence. Each queued stop then executes
        fully (TRIGGERED, its trades, its status) before the next one; after
        each, the stops the new last price triggers join the back of the queue.
        """
        queue = deque()
        self._collect_triggered(queue)
        while queue:
            stop, trigger_price_ticks = queue.popleft()
            seq = self._sequence + 1
            self._sequence = seq
            events.append(
                _new(OrderTriggered, (seq, timestamp, stop.order_id, stop.user_id, trigger_price_ticks))
            )
            self._execute(
                events,
                touched,
                stop.order_id,
                stop.user_id,
                stop.side,
                stop.order_type,
                stop.time_in_force,
                stop.price_ticks,
                stop.quantity_lots,
                stop.quote_limit_tl,
                stop.stp_mode,
                timestamp,
                0,
                0,
            )
            self._collect_triggered(queue)

    def _collect_triggered(self, queue):
        """Move the stops whose condition holds at the last trade price from
        the stop lists to ``queue``, in accepted-sequence order."""
        last = self._last_price
        batch = []
        if self._stop_rise_min is not None and last >= self._stop_rise_min:
            stops = self._stops_rise
            index = stops.bisect_left((last + 1,))
            batch.extend(stops[:index])
            del stops[:index]
            self._stop_rise_min = stops[0][0] if stops else None
        if self._stop_fall_max is not None and last <= self._stop_fall_max:
            stops = self._stops_fall
            index = stops.bisect_left((last,))
            batch.extend(stops[index:])
            del stops[index:]
            self._stop_fall_max = stops[-1][0] if stops else None
        if batch:
            batch.sort(key=_accepted_sequence_of)
            orders = self._orders
            for entry in batch:
                stop = entry[2]
                del orders[stop.order_id]
                queue.append((stop, last))

    def _emit_book_deltas(self, events, touched, timestamp):
        """One BOOK_DELTA per touched level whose aggregate changed.

        ``touched`` maps ``price_ticks`` (asks) or ``-price_ticks`` (bids) to
        the level's aggregate before the command, in first-touch order."""
        seq = self._sequence
        bid_levels = self._bids.levels
        ask_levels = self._asks.levels
        for key, before in touched.items():
            if key < 0:
                price = -key
                level = bid_levels.get(price)
                side = BUY
            else:
                price = key
                level = ask_levels.get(price)
                side = SELL
            now = level.quantity_lots if level is not None else 0
            if now != before:
                seq += 1
                events.append(_new(BookDelta, (seq, timestamp, side, price, now)))
        self._sequence = seq

    # ------------------------------------------------------ book maintenance

    def _rest(self, order, touched):
        """Append ``order`` at the back of its price level (created if needed)."""
        book_side = self._bids if order.side == BUY else self._asks
        price = order.price_ticks
        level = book_side.levels.get(price)
        if level is None:
            level = book_side.add_level(price)
        if touched is not None:
            key = -price if book_side.is_bid else price
            if key not in touched:
                touched[key] = level.quantity_lots
        tail = level.tail
        order.level = level
        order.prev = tail
        order.next = None
        if tail is None:
            level.head = order
        else:
            tail.next = order
        level.tail = order
        level.quantity_lots += order.quantity_lots_remaining
        self._orders[order.order_id] = order
        return level

    def _unlink(self, order):
        """Take ``order`` out of its level (removing the level if it empties);
        the caller removes it from ``_orders``. Returns the level."""
        level = order.level
        before = order.prev
        after = order.next
        if before is None:
            level.head = after
        else:
            before.next = after
        if after is None:
            level.tail = before
        else:
            after.prev = before
        level.quantity_lots -= order.quantity_lots_remaining
        if level.head is None:
            (self._bids if order.side == BUY else self._asks).remove_level(level.price_ticks)
        return level

    def _add_stop(self, stop):
        stop_price = stop.stop_price_ticks
        if stop.triggers_on_rise:
            self._stops_rise.add(stop.key())
            if self._stop_rise_min is None or stop_price < self._stop_rise_min:
                self._stop_rise_min = stop_price
        else:
            self._stops_fall.add(stop.key())
            if self._stop_fall_max is None or stop_price > self._stop_fall_max:
                self._stop_fall_max = stop_price
        self._orders[stop.order_id] = stop

    def _remove_stop(self, stop):
        """Take ``stop`` out of its stop list; the caller removes it from ``_orders``."""
        if stop.triggers_on_rise:
            stops = self._stops_rise
            stops.remove(stop.key())
            self._stop_rise_min = stops[0][0] if stops else None
        else:
            stops = self._stops_fall
            stops.remove(stop.key())
            self._stop_fall_max = stops[-1][0] if stops else None

    # ------------------------------------------------------------ invariants

    def check_invariants(self):
        """Verify the whole internal state; raise InvariantError if it is wrong.

        O(open orders). Checks: each side's sorted prices equal its level keys
        and its cached best price is the best of them; every level is a
        well-linked FIFO list of orders of that side and price with positive
        remaining quantity, whose sum is the level's positive total; the book
        is not crossed; ``_orders`` holds exactly the resting orders and the
        untriggered stops; each stop sits in the stop list of its trigger
        direction, the cached nearest stop prices are right, and no stop's
        condition holds at the last trade price (it would have triggered).
        """

        def fail(message):
            raise InvariantError(f"{self.symbol}: {message}")

        resting = 0
        for book_side in (self._bids, self._asks):
            levels = book_side.levels
            prices = list(book_side.prices)
            if prices != sorted(levels):
                fail(f"{book_side.side} sorted prices disagree with the levels")
            if len(set(prices)) != len(prices):
                fail(f"{book_side.side} duplicate prices")
            expected_best = (prices[-1] if book_side.is_bid else prices[0]) if prices else None
            if book_side.best_price_ticks != expected_best:
                fail(f"{book_side.side} best price {book_side.best_price_ticks} != {expected_best}")
            for price, level in levels.items():
                if level.price_ticks != price:
                    fail(f"level keyed {price} has price {level.price_ticks}")
                total = 0
                previous = None
                order = level.head
                if order is None:
                    fail(f"empty {book_side.side} level at {price}")
                while order is not None:
                    if order.prev is not previous:
                        fail(f"order {order.order_id}: broken prev link")
                    if order.level is not level or order.price_ticks != price:
                        fail(f"order {order.order_id}: wrong level")
                    if order.side != book_side.side:
                        fail(f"order {order.order_id}: on the wrong side")
                    if not _is_positive_int(order.quantity_lots_remaining):
                        fail(f"order {order.order_id}: remaining {order.quantity_lots_remaining}")
                    if order.quantity_lots_filled < 0 or order.notional_tl_filled < 0:
                        fail(f"order {order.order_id}: negative filled totals")
                    if self._orders.get(order.order_id) is not order:
                        fail(f"order {order.order_id}: not indexed")
                    total += order.quantity_lots_remaining
                    resting += 1
                    previous = order
                    order = order.next
                if level.tail is not previous:
                    fail(f"{book_side.side} level {price}: wrong tail")
                if total != level.quantity_lots:
                    fail(f"{book_side.side} level {price}: total {level.quantity_lots} != sum {total}")
        best_bid = self._bids.best_price_ticks
        best_ask = self._asks.best_price_ticks
        if best_bid is not None and best_ask is not None and best_bid >= best_ask:
            fail(f"crossed book: bid {best_bid} >= ask {best_ask}")

        stops = 0
        last = self._last_price
        for stop_list, on_rise in ((self._stops_rise, True), (self._stops_fall, False)):
            for stop_price, accepted_sequence, stop in stop_list:
                stops += 1
                if stop.stop_price_ticks != stop_price or stop.accepted_sequence != accepted_sequence:
                    fail(f"stop {stop.order_id}: key disagrees with the stop")
                if stop.triggers_on_rise is not on_rise:
                    fail(f"stop {stop.order_id}: in the wrong stop list")
                if self._orders.get(stop.order_id) is not stop:
                    fail(f"stop {stop.order_id}: not indexed")
                if not 0 < accepted_sequence <= self._sequence:
                    fail(f"stop {stop.order_id}: accepted_sequence {accepted_sequence} out of range")
                if last is not None and (last >= stop_price if on_rise else last <= stop_price):
                    fail(f"stop {stop.order_id} at {stop_price} should have triggered at {last}")
        rise_min = self._stops_rise[0][0] if self._stops_rise else None
        fall_max = self._stops_fall[-1][0] if self._stops_fall else None
        if (self._stop_rise_min, self._stop_fall_max) != (rise_min, fall_max):
            fail("cached nearest stop prices are stale")
        if resting + stops != len(self._orders):
            fail(f"index holds {len(self._orders)} orders, book holds {resting} + {stops} stops")

    # ------------------------------------------------------ snapshot/restore

    def snapshot(self):
        """The whole book as a JSON-ready dict of ints, strings and lists.

        ``bids``/``asks``: resting orders best price first and in queue order
        within a price, as rows of ORDER_COLUMNS. ``stops``: untriggered stops
        by ascending accepted_sequence, as rows of STOP_COLUMNS. Absent values
        are 0 (numbers) or "" (time_in_force). ``sequence`` is the last event's
        sequence; ``last_trade_price_ticks`` is 0 before the first trade.
        ``OrderBook.restore(snapshot)`` rebuilds a book that behaves
        identically; docs/ENGINE.md says how to build one from database rows.
        """

        def order_rows(book_side):
            rows = []
            levels = book_side.levels
            for price in book_side.prices_best_first():
                order = levels[price].head
                while order is not None:
                    rows.append(
                        [
                            order.order_id,
                            order.user_id,
                            order.price_ticks,
                            order.quantity_lots_remaining,
                            order.quantity_lots_filled,
                            order.notional_tl_filled,
                            order.order_type,
                            order.stp_mode,
                        ]
                    )
                    order = order.next
            return rows

        entries = sorted([*self._stops_rise, *self._stops_fall], key=_accepted_sequence_of)
        stop_rows = [
            [
                stop.order_id,
                stop.user_id,
                stop.side,
                stop.order_type,
                stop.time_in_force or "",
                stop.price_ticks or 0,
                stop.stop_price_ticks,
                stop.quantity_lots or 0,
                stop.quote_limit_tl or 0,
                stop.stp_mode,
                stop.accepted_sequence,
            ]
            for _, _, stop in entries
        ]
        return {
            "format": SNAPSHOT_FORMAT,
            "symbol": self.symbol,
            "sequence": self._sequence,
            "status": self._status,
            "stp_default": self.stp_default,
            "last_trade_price_ticks": self._last_price or 0,
            "order_columns": list(ORDER_COLUMNS),
            "bids": order_rows(self._bids),
            "asks": order_rows(self._asks),
            "stop_columns": list(STOP_COLUMNS),
            "stops": stop_rows,
        }

    @classmethod
    def restore(cls, snapshot):
        """Rebuild a book from ``snapshot()`` output (or one built from the
        database, docs/ENGINE.md). Raises ValueError for a malformed snapshot
        and InvariantError for one that describes an impossible book."""
        if snapshot.get("format") != SNAPSHOT_FORMAT:
            raise ValueError(f"unsupported snapshot format {snapshot.get('format')!r}")
        if list(snapshot["order_columns"]) != list(ORDER_COLUMNS):
            raise ValueError("snapshot order_columns differ from ORDER_COLUMNS")
        if list(snapshot["stop_columns"]) != list(STOP_COLUMNS):
            raise ValueError("snapshot stop_columns differ from STOP_COLUMNS")
        book = cls(snapshot["symbol"], stp_default=snapshot["stp_default"], status=snapshot["status"])
        sequence = snapshot["sequence"]
        if type(sequence) is not int or sequence < 0:
            raise ValueError(f"bad sequence {sequence!r}")
        book._sequence = sequence
        last = snapshot["last_trade_price_ticks"]
        if type(last) is not int or last < 0:
            raise ValueError(f"bad last_trade_price_ticks {last!r}")
        book._last_price = last or None

        for side, rows in ((BUY, snapshot["bids"]), (SELL, snapshot["asks"])):
            previous_price = None
            for row in rows:
                (order_id, user_id, price, remaining, filled, notional, order_type, stp_mode) = row
                for name, value in (("order_id", order_id), ("user_id", user_id), ("price_ticks", price),
                                    ("quantity_lots_remaining", remaining)):
                    if not _is_positive_int(value):
                        raise ValueError(f"order {order_id!r}: bad {name} {value!r}")
                if type(filled) is not int or filled < 0 or type(notional) is not int or notional < 0:
                    raise ValueError(f"order {order_id}: bad filled totals")
                if order_type not in PRICED_ORDER_TYPES:
                    raise ValueError(f"order {order_id}: type {order_type!r} cannot rest")
                if stp_mode not in STP_MODES:
                    raise ValueError(f"order {order_id}: bad stp_mode {stp_mode!r}")
                if order_id in book._orders:
                    raise ValueError(f"order {order_id} appears twice")
                if previous_price is not None and (
                    price > previous_price if side == BUY else price < previous_price
                ):
                    raise ValueError(f"{side} orders are not best price first at order {order_id}")
                previous_price = price
                book._rest(
                    _Order(order_id, user_id, side, price, remaining, filled, notional, order_type, stp_mode),
                    None,
                )

        previous_sequence = 0
        for row in snapshot["stops"]:
            (order_id, user_id, side, order_type, time_in_force, price, stop_price, quantity, quote,
             stp_mode, accepted_sequence) = row
            reason = _check_new_order(
                order_id, user_id, side, order_type, time_in_force or None, price, stop_price,
                quantity, quote, stp_mode,
            )
            if reason is not None or order_type not in STOP_ORDER_TYPES or stp_mode is None:
                raise ValueError(f"stop {order_id!r}: {reason or 'not a valid stop'}")
            if order_id in book._orders:
                raise ValueError(f"order {order_id} appears twice")
            if not _is_positive_int(accepted_sequence) or accepted_sequence <= previous_sequence:
                raise ValueError(f"stops are not in ascending accepted_sequence at stop {order_id}")
            previous_sequence = accepted_sequence
            book._add_stop(
                _Stop(
                    order_id,
                    user_id,
                    side,
                    order_type,
                    None if order_type in MARKET_ORDER_TYPES else time_in_force,
                    price or None,
                    stop_price,
                    quantity or None,
                    quote or None,
                    stp_mode,
                    accepted_sequence,
                )
            )
        book.check_invariants()
        return book
