"""The matching engine core: a pure, deterministic order book per market.

``events = book.apply(command)``: commands in, events out, same input same
output. No Django, no Redis, no I/O, no clock. The contract is docs/ENGINE.md.
"""

from .book import ORDER_COLUMNS, SNAPSHOT_FORMAT, STOP_COLUMNS, InvariantError, OpenOrder, OrderBook
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
    NEW,
    POST_ONLY,
    SELL,
    STOP_LOSS,
    STOP_LOSS_LIMIT,
    STP_EXPIRE_BOTH,
    STP_EXPIRE_MAKER,
    STP_EXPIRE_TAKER,
    STP_NONE,
    TAKE_PROFIT,
    TAKE_PROFIT_LIMIT,
    TRADING,
    UNTRIGGERED,
    Reason,
)
from .events import (
    EVENT_TYPES,
    TERMINAL_KINDS,
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
    event_from_dict,
    event_to_dict,
)

__all__ = [
    "OrderBook", "OpenOrder", "InvariantError", "SNAPSHOT_FORMAT", "ORDER_COLUMNS", "STOP_COLUMNS",
    "NewOrder", "CancelOrder", "CancelAll", "AmendOrder", "SetMarketStatus",
    "BUY", "SELL", "LIMIT", "MARKET", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT",
    "TAKE_PROFIT", "TAKE_PROFIT_LIMIT", "GTC", "IOC", "FOK", "STP_NONE", "STP_EXPIRE_TAKER",
    "STP_EXPIRE_MAKER", "STP_EXPIRE_BOTH", "TRADING", "HALTED", "CANCEL_ONLY", "POST_ONLY",
    "NEW", "UNTRIGGERED", "Reason",
    "EVENT_TYPES", "TERMINAL_KINDS", "event_to_dict", "event_from_dict",
    "OrderAccepted", "OrderRejected", "CancelRejected", "AmendRejected", "Trade",
    "OrderPartiallyFilled", "OrderFilled", "OrderCanceled", "OrderExpired", "OrderTriggered",
    "OrderAmended", "BookDelta", "MarketStatusChanged", "MarketStatusRejected",
]
