"""Events: the only output of an order book.

Each event is an immutable named tuple with a ``kind`` class attribute. Every
event carries ``sequence`` (the market's event counter, exactly +1 per event,
never reused; a TRADE's sequence is the trade's id) and ``timestamp`` (copied
from the command that caused it). Prices are ticks, quantities lots, notional
amounts tick-lots. ``None`` means "not applicable".

The book builds events with ``tuple.__new__(EventClass, (...))``, skipping the
named tuple's Python-level ``__new__``: events are the engine's main per-fill
allocation. Two events of different kinds with equal fields compare equal as
tuples; compare ``kind`` too (``event_to_dict`` does).

Terminal events (FILLED, CANCELED, EXPIRED, REJECTED) are emitted exactly once
per order and carry its cumulative ``quantity_lots_filled`` and
``notional_tl_filled``, so the ledger can release "held minus consumed"
without re-deriving anything. The field-by-field contract is in docs/ENGINE.md.
"""

from typing import NamedTuple, Optional


class OrderAccepted(NamedTuple):
    """ACCEPTED: a new order passed validation. Emitted before any of its trades.

    ``status`` is NEW (it now executes and/or rests) or UNTRIGGERED (a stop
    waiting for its trigger). The other fields echo the order as the book
    understood it: ``time_in_force`` is None for MARKET-like types,
    ``stp_mode`` is the resolved mode (the market default when the command
    gave None), absent values are None.
    """

    sequence: int
    timestamp: int
    order_id: int
    user_id: int
    side: str
    order_type: str
    time_in_force: Optional[str]
    price_ticks: Optional[int]
    stop_price_ticks: Optional[int]
    quantity_lots: Optional[int]
    quote_limit_tl: Optional[int]
    stp_mode: str
    status: str

    kind = "ACCEPTED"


class OrderRejected(NamedTuple):
    """REJECTED: a NEW command was refused; the order never existed in the book.

    Terminal: ``quantity_lots_filled`` and ``notional_tl_filled`` are always 0.
    """

    sequence: int
    timestamp: int
    order_id: object
    user_id: object
    reason: str
    quantity_lots_filled: int
    notional_tl_filled: int

    kind = "REJECTED"


class CancelRejected(NamedTuple):
    """CANCEL_REJECTED: a CANCEL (or CANCEL_ALL, with order_id None) was refused."""

    sequence: int
    timestamp: int
    order_id: object
    user_id: object
    reason: str

    kind = "CANCEL_REJECTED"


class AmendRejected(NamedTuple):
    """AMEND_REJECTED: an AMEND was refused; the order is unchanged."""

    sequence: int
    timestamp: int
    order_id: object
    user_id: object
    reason: str

    kind = "AMEND_REJECTED"


class Trade(NamedTuple):
    """TRADE: ``quantity_lots`` changed hands at the maker's ``price_ticks``.

    ``sequence`` is the trade id: (market, sequence) is unique.
    ``taker_side`` is the side of the taker (BUY means the buyer took).
    """

    sequence: int
    timestamp: int
    price_ticks: int
    quantity_lots: int
    maker_order_id: int
    maker_user_id: int
    taker_order_id: int
    taker_user_id: int
    taker_side: str

    kind = "TRADE"


class OrderPartiallyFilled(NamedTuple):
    """PARTIALLY_FILLED: an order that stays open has filled some of its quantity.

    Emitted for a maker after each trade that leaves it open, and for a taker
    once, after its matching, when its remainder rests in the book. Fields are
    cumulative over the order's life; ``quantity_lots_remaining`` is what is
    still open in the book.
    """

    sequence: int
    timestamp: int
    order_id: int
    user_id: int
    quantity_lots_filled: int
    notional_tl_filled: int
    quantity_lots_remaining: int

    kind = "PARTIALLY_FILLED"


class OrderFilled(NamedTuple):
    """FILLED (terminal): the order is done. Cumulative fill totals."""

    sequence: int
    timestamp: int
    order_id: int
    user_id: int
    quantity_lots_filled: int
    notional_tl_filled: int

    kind = "FILLED"


class OrderCanceled(NamedTuple):
    """CANCELED (terminal): removed by its owner. ``reason`` is CANCEL or CANCEL_ALL."""

    sequence: int
    timestamp: int
    order_id: int
    user_id: int
    quantity_lots_filled: int
    notional_tl_filled: int
    reason: str

    kind = "CANCELED"


class OrderExpired(NamedTuple):
    """EXPIRED (terminal): the book ended the order; ``reason`` says why.

    IOC_REMAINDER, FOK_NOT_FILLABLE, NO_LIQUIDITY, QUOTE_LIMIT_REACHED or
    SELF_TRADE_PREVENTION.
    """

    sequence: int
    timestamp: int
    order_id: int
    user_id: int
    quantity_lots_filled: int
    notional_tl_filled: int
    reason: str

    kind = "EXPIRED"


class OrderTriggered(NamedTuple):
    """TRIGGERED: a stop's condition held at ``trigger_price_ticks`` (a last
    trade price); it now executes as MARKET or LIMIT. Its trades follow."""

    sequence: int
    timestamp: int
    order_id: int
    user_id: int
    trigger_price_ticks: int

    kind = "TRIGGERED"


class OrderAmended(NamedTuple):
    """AMENDED: the order now has ``price_ticks`` and total ``quantity_lots``.

    ``quantity_lots_remaining`` is the open quantity right after the amend,
    before any matching the new price causes (trades follow this event).
    ``priority_kept`` is False when the order moved to the back of its level.
    """

    sequence: int
    timestamp: int
    order_id: int
    user_id: int
    price_ticks: int
    quantity_lots: int
    quantity_lots_remaining: int
    priority_kept: bool

    kind = "AMENDED"


class BookDelta(NamedTuple):
    """BOOK_DELTA: the aggregate resting quantity at (``side``, ``price_ticks``)
    is now ``quantity_lots``; 0 means the level is gone.

    Emitted after the command's other events, one per level whose aggregate
    differs from before the command, in the order the levels were first touched.
    """

    sequence: int
    timestamp: int
    side: str
    price_ticks: int
    quantity_lots: int

    kind = "BOOK_DELTA"


class MarketStatusChanged(NamedTuple):
    """MARKET_STATUS_CHANGED: the market's status is now ``status``."""

    sequence: int
    timestamp: int
    status: str
    previous_status: str

    kind = "MARKET_STATUS_CHANGED"


class MarketStatusRejected(NamedTuple):
    """MARKET_STATUS_REJECTED: a status command named an unknown status."""

    sequence: int
    timestamp: int
    status: object
    reason: str

    kind = "MARKET_STATUS_REJECTED"


EVENT_TYPES = {
    cls.kind: cls
    for cls in (
        OrderAccepted,
        OrderRejected,
        CancelRejected,
        AmendRejected,
        Trade,
        OrderPartiallyFilled,
        OrderFilled,
        OrderCanceled,
        OrderExpired,
        OrderTriggered,
        OrderAmended,
        BookDelta,
        MarketStatusChanged,
        MarketStatusRejected,
    )
}

# Kinds after which an order is done; each order gets exactly one of them.
TERMINAL_KINDS = frozenset({"FILLED", "CANCELED", "EXPIRED", "REJECTED"})


def event_to_dict(event):
    """The event as a JSON-ready dict: ``{"kind": ..., <fields>...}``."""
    data = {"kind": event.kind}
    data.update(zip(event._fields, event))
    return data


def event_from_dict(data):
    """Inverse of ``event_to_dict``."""
    cls = EVENT_TYPES[data["kind"]]
    return cls(*(data[name] for name in cls._fields))
