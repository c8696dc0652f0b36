"""Commands: the only input of an order book (``book.apply(command)``).

Commands are immutable named tuples. Ids, the user and the time arrive on the
command; the book reads no clock and no randomness. ``timestamp`` is an
opaque integer that is only copied into the events the command causes (the
platform uses microseconds since the epoch). Prices are integer ticks,
quantities integer lots and notional amounts integer tick-lots
(``price_ticks * quantity_lots``); the conversion from and to Decimal happens
at the edge, never in the engine. "Not applicable" is ``None`` (``0`` is
accepted as a synonym). The full contract per order type is in
docs/ENGINE.md.
"""

from typing import NamedTuple, Optional

from .enums import GTC, LIMIT


class NewOrder(NamedTuple):
    """Place an order.

    - ``order_id``: positive int, unique per market, assigned by the database.
    - ``user_id``: positive int, the owner (self-trade prevention, cancel rights).
    - ``side``: BUY or SELL.
    - ``order_type``: LIMIT, MARKET, LIMIT_MAKER, STOP_LOSS, STOP_LOSS_LIMIT,
      TAKE_PROFIT or TAKE_PROFIT_LIMIT.
    - ``time_in_force``: GTC, IOC or FOK for LIMIT and the *_LIMIT stops; must
      be GTC for LIMIT_MAKER; ignored for MARKET, STOP_LOSS and TAKE_PROFIT.
    - ``price_ticks``: the limit price (LIMIT, LIMIT_MAKER, *_LIMIT); None otherwise.
    - ``stop_price_ticks``: the trigger price of the four stop types; None otherwise.
    - ``quantity_lots``: the base quantity. Required for priced types. For
      MARKET-like types optional: the base quantity to buy or sell, or for a
      SELL by quote the base amount held (a cap).
    - ``quote_limit_tl``: MARKET-like types only, optional: the most notional
      (tick-lots) the order may consume: the funds held for a BUY, the amount
      to receive for a SELL by quote. A MARKET-like order needs a quantity, a
      quote limit or both; it fills while both allow.
    - ``stp_mode``: NONE, EXPIRE_TAKER, EXPIRE_MAKER, EXPIRE_BOTH, or None for
      the market's default.
    - ``timestamp``: opaque int carried into the events.
    """

    order_id: int
    user_id: int
    side: str
    order_type: str = LIMIT
    time_in_force: str = GTC
    price_ticks: Optional[int] = None
    stop_price_ticks: Optional[int] = None
    quantity_lots: Optional[int] = None
    quote_limit_tl: Optional[int] = None
    stp_mode: Optional[str] = None
    timestamp: int = 0


class CancelOrder(NamedTuple):
    """Cancel a resting order or an untriggered stop of ``user_id``.

    An order that is not open, or that belongs to another user, is rejected
    with UNKNOWN_ORDER either way, so a user learns nothing about others.
    """

    order_id: int
    user_id: int
    timestamp: int = 0


class CancelAll(NamedTuple):
    """Cancel every open order and untriggered stop of ``user_id`` in this market."""

    user_id: int
    timestamp: int = 0


class AmendOrder(NamedTuple):
    """Change the price and/or the total quantity of a resting order.

    - ``price_ticks``: the new limit price, None to keep it.
    - ``quantity_lots``: the new TOTAL quantity including what already filled,
      None to keep it; must stay above the filled quantity.

    Quantity down at the same price keeps the order's place in the queue; a
    price change or a quantity increase moves it to the back of its (new)
    level, and a new price that crosses matches as a taker first.
    Untriggered stops cannot be amended (AMEND_NOT_SUPPORTED).
    """

    order_id: int
    user_id: int
    price_ticks: Optional[int] = None
    quantity_lots: Optional[int] = None
    timestamp: int = 0


class SetMarketStatus(NamedTuple):
    """Change the market's status: TRADING, HALTED, CANCEL_ONLY or POST_ONLY."""

    status: str
    timestamp: int = 0
