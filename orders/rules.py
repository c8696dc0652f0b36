"""Market rules an order must meet before it is accepted, and what it must hold.

Pure functions of the request and the market (no database, no Redis), so
that every rule is unit-testable and the API rejects bad orders before
touching money. Each violation is an ApplicationError with a stable code and
the offending field.

Funds held per order (the engine may never consume more):

- priced BUY (LIMIT, LIMIT_MAKER, *_LIMIT stops): price x quantity of quote;
- any SELL by quantity: the quantity of base;
- market-like BUY by quote amount: that amount of quote;
- market-like BUY by quantity: quantity x reference price x (1 + price band)
  of quote, which is also the engine's funds cap: the order stops when the
  next fill would spend more (the reference is the stop price for stops, else
  the last trade price, else the best ask);
- market-like SELL by quote amount: the base needed to raise that amount at
  reference x (1 - price band), which is also the engine's quantity cap.

Every amount is computed exactly: the public functions run in ``EXACT``,
which has room for any product of two 38-digit amounts and raises instead of
rounding (Python's default context keeps 28 digits and would silently round
a notional below what the engine then settles). The one division, a
ceiling, rounds up on purpose (``_CEILING``).
"""

from __future__ import annotations

import decimal
import functools
import re
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

from exchange.core.errors import ApplicationError
from exchange.models import AMOUNT_DIGITS, AMOUNT_PLACES
from matching.units import MarketUnits, NotAMultiple
from orders.models import MARKET_LIKE_TYPES, PRICED_TYPES, STOP_TYPES, OrderType, Side, StpMode, TimeInForce

# Matched with fullmatch(): "$" in match() would also accept a trailing newline.
CLIENT_ORDER_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Every amount an order leads to (hold, notional, fills, fees) is stored in a
# column of AMOUNT_DIGITS digits, AMOUNT_PLACES of them decimals.
AMOUNT_LIMIT = Decimal(10) ** (AMOUNT_DIGITS - AMOUNT_PLACES)

EXACT = decimal.Context(
    prec=80, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow, decimal.DivisionByZero])
_CEILING = decimal.Context(prec=80, rounding=ROUND_CEILING)


def exact(function):
    """Run ``function`` in EXACT: every amount it computes is exact, or it raises."""

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with decimal.localcontext(EXACT):
            return function(*args, **kwargs)

    return wrapper


_STATUS_ERRORS = {
    "HALTED": ("MARKET_HALTED", "The market is halted: no orders are accepted."),
    "CANCEL_ONLY": ("MARKET_CANCEL_ONLY", "The market accepts only cancels right now."),
}


@dataclass(frozen=True)
class OrderRequest:
    """An order as the client asked for it (amounts already parsed as Decimal)."""

    side: str
    type: str
    quantity: Decimal | None = None
    quote_quantity: Decimal | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str | None = None
    stp_mode: str | None = None
    client_order_id: str | None = None


@dataclass(frozen=True)
class Reference:
    """Prices an order's funds can be estimated from."""

    last_price: Decimal | None = None
    best_bid: Decimal | None = None
    best_ask: Decimal | None = None


@dataclass(frozen=True)
class CheckedOrder:
    """A request that meets the market's rules, with what it must hold."""

    side: str
    type: str
    quantity: Decimal | None
    quote_quantity: Decimal | None
    price: Decimal | None
    stop_price: Decimal | None
    time_in_force: str | None
    stp_mode: str
    hold_asset_is_quote: bool
    hold_amount: Decimal


def _fail(code: str, message: str, field: str | None = None, status_code: int = 400):
    raise ApplicationError(code, message, field=field, status_code=status_code)


def _count(convert, value: Decimal, field: str, code: str, unit: Decimal) -> int:
    try:
        return convert(value)
    except NotAMultiple:
        _fail(code, f"{field} must be a multiple of {unit.normalize():f}.", field)


def _positive(value: Decimal | None, field: str) -> None:
    if value is not None and value <= 0:
        _fail("MUST_BE_POSITIVE", f"{field} must be greater than zero.", field)


def check_market_status(market, order_type: str) -> None:
    if market.status in _STATUS_ERRORS:
        code, message = _STATUS_ERRORS[market.status]
        _fail(code, message, "market", status_code=409)
    if market.status == "POST_ONLY" and order_type not in (OrderType.LIMIT, OrderType.LIMIT_MAKER):
        _fail("MARKET_POST_ONLY", "The market accepts only limit orders that rest in the book right now.", "type", 409)


def check_price(market, units: MarketUnits, price: Decimal, reference: Reference, field: str = "price") -> None:
    _positive(price, field)
    _count(units.price_to_ticks, price, field, "INVALID_TICK_SIZE", units.tick_size)
    last = reference.last_price
    if last is not None:
        low, high = last * (1 - market.price_band), last * (1 + market.price_band)
        if not low <= price <= high:
            _fail(
                "PRICE_OUTSIDE_BAND",
                f"{field} must lie within {market.price_band * 100:.2f}% of the last price {last.normalize():f} "
                f"({low.normalize():f} to {high.normalize():f}).",
                field,
            )


def check_quantity(market, units: MarketUnits, quantity: Decimal, field: str = "quantity") -> None:
    _positive(quantity, field)
    _count(units.quantity_to_lots, quantity, field, "INVALID_STEP_SIZE", units.step_size)
    if quantity < market.min_quantity:
        _fail("QUANTITY_TOO_SMALL", f"{field} must be at least {market.min_quantity.normalize():f}.", field)
    if quantity > market.max_quantity:
        _fail("QUANTITY_TOO_LARGE", f"{field} must be at most {market.max_quantity.normalize():f}.", field)


def check_notional(market, notional: Decimal, field: str) -> None:
    if notional < market.min_notional:
        _fail(
            "NOTIONAL_TOO_SMALL",
            f"price x quantity must be at least {market.min_notional.normalize():f} {market.quote.code}.",
            field,
        )


def check_amount_fits(amount: Decimal, field: str) -> None:
    """The price x quantity of an order, and what it holds, must be below
    AMOUNT_LIMIT: each input alone is, but their product need not be, and
    the order's hold, notional and fills could not be recorded."""
    if amount >= AMOUNT_LIMIT:
        _fail("NOTIONAL_TOO_LARGE", f"The order's value must be below {AMOUNT_LIMIT:f}; lower the price or quantity.", field)


# The enums' values as sets: Django's ``.values`` builds a new list on every use.
_SIDES = frozenset(Side.values)
_ORDER_TYPES = frozenset(OrderType.values)
_STP_MODES = frozenset(StpMode.values)
_TIMES_IN_FORCE = frozenset(TimeInForce.values)


def _check_shape(request: OrderRequest) -> str | None:
    """Which fields each type needs, allows and forbids. Returns the time in force."""
    order_type = request.type
    if request.side not in _SIDES:
        _fail("INVALID_SIDE", "side must be BUY or SELL.", "side")
    if order_type not in _ORDER_TYPES:
        _fail("INVALID_ORDER_TYPE", f"type must be one of {', '.join(OrderType.values)}.", "type")
    if request.stp_mode is not None and request.stp_mode not in _STP_MODES:
        _fail("INVALID_STP_MODE", f"stp_mode must be one of {', '.join(StpMode.values)}.", "stp_mode")
    if request.client_order_id is not None and not CLIENT_ORDER_ID.fullmatch(request.client_order_id):
        _fail("INVALID_CLIENT_ORDER_ID", "client_order_id must be 1-64 characters of A-Z a-z 0-9 . _ : -.", "client_order_id")

    if order_type in PRICED_TYPES and request.price is None:
        _fail("PRICE_REQUIRED", f"{order_type} orders need a price.", "price")
    if order_type not in PRICED_TYPES and request.price is not None:
        _fail("PRICE_NOT_ALLOWED", f"{order_type} orders take no price.", "price")
    if order_type in STOP_TYPES and request.stop_price is None:
        _fail("STOP_PRICE_REQUIRED", f"{order_type} orders need a stop_price.", "stop_price")
    if order_type not in STOP_TYPES and request.stop_price is not None:
        _fail("STOP_PRICE_NOT_ALLOWED", f"{order_type} orders take no stop_price.", "stop_price")

    if order_type in MARKET_LIKE_TYPES:
        if (request.quantity is None) == (request.quote_quantity is None):
            _fail(
                "QUANTITY_OR_QUOTE_QUANTITY_REQUIRED",
                f"{order_type} orders need exactly one of quantity and quote_quantity.",
                "quantity",
            )
        if request.time_in_force is not None:
            _fail("TIME_IN_FORCE_NOT_ALLOWED", f"{order_type} orders take no time_in_force.", "time_in_force")
        return None
    if request.quantity is None:
        _fail("QUANTITY_REQUIRED", f"{order_type} orders need a quantity.", "quantity")
    if request.quote_quantity is not None:
        _fail("QUOTE_QUANTITY_NOT_ALLOWED", f"{order_type} orders take a quantity, not a quote_quantity.", "quote_quantity")
    time_in_force = request.time_in_force or TimeInForce.GTC
    if time_in_force not in _TIMES_IN_FORCE:
        _fail("INVALID_TIME_IN_FORCE", "time_in_force must be GTC, IOC or FOK.", "time_in_force")
    if order_type == OrderType.LIMIT_MAKER and time_in_force != TimeInForce.GTC:
        _fail("INVALID_TIME_IN_FORCE", "LIMIT_MAKER orders rest in the book: time_in_force must be GTC.", "time_in_force")
    return time_in_force


@exact
def order_check(*, market, request: OrderRequest, reference: Reference) -> CheckedOrder:
    """Validate ``request`` against ``market``'s rules; compute what it must hold."""
    units = MarketUnits.of(market)
    time_in_force = _check_shape(request)
    check_market_status(market, request.type)

    if request.price is not None:
        # The band protects against fat fingers on orders that can trade now;
        # a stop-limit's price is checked against its own stop price instead.
        band_reference = reference if request.type in (OrderType.LIMIT, OrderType.LIMIT_MAKER) else Reference(
            last_price=request.stop_price)
        check_price(market, units, request.price, band_reference)
    if request.stop_price is not None:
        check_price(market, units, request.stop_price, Reference(), field="stop_price")
    if request.quantity is not None:
        check_quantity(market, units, request.quantity)
    if request.quote_quantity is not None:
        _positive(request.quote_quantity, "quote_quantity")
        _count(units.quote_to_tl, request.quote_quantity, "quote_quantity", "INVALID_QUOTE_PRECISION", units.tick_lot)
        check_notional(market, request.quote_quantity, "quote_quantity")

    is_buy = request.side == Side.BUY
    if request.type in PRICED_TYPES:
        notional = request.price * request.quantity
        check_notional(market, notional, "quantity")
        check_amount_fits(notional, "quantity")
        hold_amount = notional if is_buy else request.quantity
    elif request.quantity is not None:
        # Market-like by quantity: a sell holds exactly its quantity; a buy
        # holds (and may spend at most) quantity x reference x (1 + band).
        reference_price = _market_reference(request, reference)
        if reference_price is not None:
            check_notional(market, reference_price * request.quantity, "quantity")
        if is_buy:
            if reference_price is None:
                _no_reference()
            cap_tl = units.ceil_to_int(
                units.quantity_to_lots(request.quantity) * units.price_to_ticks(reference_price) * (1 + market.price_band)
            )
            hold_amount = units.tl_to_quote(cap_tl)
        else:
            hold_amount = request.quantity
    else:
        # Market-like by quote amount: a buy holds the amount; a sell holds the
        # base it needs at a price band below the reference, at least one lot.
        if is_buy:
            hold_amount = request.quote_quantity
        else:
            reference_price = _market_reference(request, reference)
            if reference_price is None:
                _no_reference()
            floor_ticks = units.price_to_ticks(reference_price) * (1 - market.price_band)
            lots = max(1, units.ceil_to_int(_CEILING.divide(units.quote_to_tl(request.quote_quantity), floor_ticks)))
            hold_amount = units.lots_to_quantity(lots)

    check_amount_fits(hold_amount, "quote_quantity" if request.quote_quantity is not None else "quantity")
    return CheckedOrder(
        side=request.side,
        type=request.type,
        quantity=request.quantity,
        quote_quantity=request.quote_quantity,
        price=request.price,
        stop_price=request.stop_price,
        time_in_force=time_in_force,
        stp_mode=request.stp_mode or market.stp_default,
        hold_asset_is_quote=is_buy,
        hold_amount=hold_amount,
    )


def _market_reference(request: OrderRequest, reference: Reference) -> Decimal | None:
    if request.stop_price is not None:
        return request.stop_price
    if reference.last_price is not None:
        return reference.last_price
    return reference.best_ask if request.side == Side.BUY else reference.best_bid


def _no_reference():
    _fail(
        "NO_REFERENCE_PRICE",
        "The market has no trade or opposite order to price this market order; use a limit order or quote_quantity.",
        "type",
        status_code=409,
    )


@exact
def amend_check(*, market, order, price: Decimal | None, quantity: Decimal | None, reference: Reference) -> tuple[Decimal, Decimal]:
    """Validate an amendment of a resting limit order; return the new (price, quantity)."""
    if price is None and quantity is None:
        _fail("NOTHING_TO_AMEND", "Give a new price, a new quantity, or both.", None)
    if order.type not in (OrderType.LIMIT, OrderType.LIMIT_MAKER):
        _fail("AMEND_NOT_SUPPORTED", "Only resting LIMIT and LIMIT_MAKER orders can be amended.", None, 409)
    if market.status in _STATUS_ERRORS or market.status == "CANCEL_ONLY":
        check_market_status(market, order.type)
    units = MarketUnits.of(market)
    new_price = order.price if price is None else price
    new_quantity = order.quantity if quantity is None else quantity
    if price is not None:
        check_price(market, units, price, reference)
    if quantity is not None:
        check_quantity(market, units, quantity)
        if quantity <= order.filled_quantity:
            _fail(
                "QUANTITY_NOT_ABOVE_FILLED",
                f"The new quantity must exceed what already filled ({order.filled_quantity.normalize():f}).",
                "quantity",
            )
    if new_price == order.price and new_quantity == order.quantity:
        _fail("NOTHING_TO_AMEND", "The new terms are the order's current terms.", None)
    check_notional(market, new_price * new_quantity, "quantity")
    check_amount_fits(new_price * new_quantity, "quantity")
    return new_price, new_quantity


@exact
def hold_needed(*, side: str, price: Decimal, quantity: Decimal, filled_quantity: Decimal) -> Decimal:
    """What a resting limit order must keep held for its unfilled part."""
    remaining = quantity - filled_quantity
    return price * remaining if side == Side.BUY else remaining


@exact
def amend_hold_needed(*, side: str, price: Decimal, quantity: Decimal, filled_quantity: Decimal,
                      new_price: Decimal, new_quantity: Decimal) -> Decimal:
    """What an order must hold while an amendment to (new_price, new_quantity) waits
    for the matcher: enough for its current terms, and for the new terms however
    much of the order fills at its current price before the amendment applies.

    A sell needs its remaining quantity either way. A buy that fills ``k`` more
    at ``price`` before the amendment spends ``price x k`` and then needs
    ``new_price x (new_quantity - filled - k)``; the worst case is at k = 0 when
    the new price is not lower, else at the largest k that still leaves the
    amendment something to apply to.
    """
    current = hold_needed(side=side, price=price, quantity=quantity, filled_quantity=filled_quantity)
    new_remaining = new_quantity - filled_quantity
    if side != Side.BUY:
        return max(current, new_remaining)
    fills_first = min(quantity - filled_quantity, new_remaining)
    worst = new_price * new_remaining + fills_first * max(Decimal(0), price - new_price)
    return max(current, worst)
