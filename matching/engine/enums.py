"""The engine's vocabulary: plain string constants.

Plain ``str`` constants (not ``enum.Enum``) because they are compared and
hashed in the matching loop, where an Enum's Python-level ``__hash__`` and
``__eq__`` would cost more than the rest of the work, and because they travel
unchanged into JSON (events, snapshots). Every value equals its own name.
"""

# Order side.
BUY = "BUY"
SELL = "SELL"
SIDES = frozenset({BUY, SELL})

# Order types.
LIMIT = "LIMIT"
MARKET = "MARKET"
LIMIT_MAKER = "LIMIT_MAKER"
STOP_LOSS = "STOP_LOSS"
STOP_LOSS_LIMIT = "STOP_LOSS_LIMIT"
TAKE_PROFIT = "TAKE_PROFIT"
TAKE_PROFIT_LIMIT = "TAKE_PROFIT_LIMIT"
ORDER_TYPES = frozenset(
    {LIMIT, MARKET, LIMIT_MAKER, STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT}
)
# Types that wait for a trigger before they reach the book.
STOP_ORDER_TYPES = frozenset({STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT})
# Types that carry a limit price (a stop-limit becomes a LIMIT when triggered).
PRICED_ORDER_TYPES = frozenset({LIMIT, LIMIT_MAKER, STOP_LOSS_LIMIT, TAKE_PROFIT_LIMIT})
# Types that execute with MARKET semantics (a stop becomes a MARKET when triggered).
MARKET_ORDER_TYPES = frozenset({MARKET, STOP_LOSS, TAKE_PROFIT})

# Time in force.
GTC = "GTC"
IOC = "IOC"
FOK = "FOK"
TIMES_IN_FORCE = frozenset({GTC, IOC, FOK})

# Self-trade prevention modes, decided by the taker's mode.
STP_NONE = "NONE"
STP_EXPIRE_TAKER = "EXPIRE_TAKER"
STP_EXPIRE_MAKER = "EXPIRE_MAKER"
STP_EXPIRE_BOTH = "EXPIRE_BOTH"
STP_MODES = frozenset({STP_NONE, STP_EXPIRE_TAKER, STP_EXPIRE_MAKER, STP_EXPIRE_BOTH})

# Market status.
TRADING = "TRADING"
HALTED = "HALTED"
CANCEL_ONLY = "CANCEL_ONLY"
POST_ONLY = "POST_ONLY"
MARKET_STATUSES = frozenset({TRADING, HALTED, CANCEL_ONLY, POST_ONLY})

# Order status announced by ACCEPTED.
NEW = "NEW"
UNTRIGGERED = "UNTRIGGERED"


class Reason:
    """Reason codes carried by REJECTED, CANCEL_REJECTED, AMEND_REJECTED,
    MARKET_STATUS_REJECTED, EXPIRED and CANCELED events (see docs/ENGINE.md)."""

    # Malformed commands.
    INVALID_ORDER_ID = "INVALID_ORDER_ID"
    INVALID_USER_ID = "INVALID_USER_ID"
    INVALID_SIDE = "INVALID_SIDE"
    INVALID_ORDER_TYPE = "INVALID_ORDER_TYPE"
    INVALID_TIME_IN_FORCE = "INVALID_TIME_IN_FORCE"
    INVALID_PRICE = "INVALID_PRICE"
    INVALID_STOP_PRICE = "INVALID_STOP_PRICE"
    INVALID_QUANTITY = "INVALID_QUANTITY"
    INVALID_QUOTE_LIMIT = "INVALID_QUOTE_LIMIT"
    QUANTITY_OR_QUOTE_LIMIT_REQUIRED = "QUANTITY_OR_QUOTE_LIMIT_REQUIRED"
    INVALID_STP_MODE = "INVALID_STP_MODE"
    INVALID_STATUS = "INVALID_STATUS"
    # Book state.
    DUPLICATE_ORDER_ID = "DUPLICATE_ORDER_ID"
    UNKNOWN_ORDER = "UNKNOWN_ORDER"
    MARKET_HALTED = "MARKET_HALTED"
    MARKET_CANCEL_ONLY = "MARKET_CANCEL_ONLY"
    MARKET_POST_ONLY = "MARKET_POST_ONLY"
    POST_ONLY_WOULD_TAKE = "POST_ONLY_WOULD_TAKE"
    WOULD_TRIGGER_IMMEDIATELY = "WOULD_TRIGGER_IMMEDIATELY"
    # Amend.
    AMEND_NOT_SUPPORTED = "AMEND_NOT_SUPPORTED"
    NOTHING_TO_AMEND = "NOTHING_TO_AMEND"
    QUANTITY_NOT_ABOVE_FILLED = "QUANTITY_NOT_ABOVE_FILLED"
    # Why an accepted order ended without filling completely (EXPIRED).
    IOC_REMAINDER = "IOC_REMAINDER"
    FOK_NOT_FILLABLE = "FOK_NOT_FILLABLE"
    NO_LIQUIDITY = "NO_LIQUIDITY"
    QUOTE_LIMIT_REACHED = "QUOTE_LIMIT_REACHED"
    SELF_TRADE_PREVENTION = "SELF_TRADE_PREVENTION"
    # Which command canceled an order (CANCELED).
    CANCEL = "CANCEL"
    CANCEL_ALL = "CANCEL_ALL"
