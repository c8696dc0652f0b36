"""Rebuilding a market's order book from the database.

PostgreSQL holds every resting order with its queue position
(``priority_sequence``) and every untriggered stop with the sequence that
accepted it; ``MarketState`` holds the engine's sequence counter and the last
trade price. From those rows this module builds the snapshot format of
``matching.engine`` (docs/ENGINE.md) and restores a book that behaves exactly
like the one that was running when the last batch committed.
"""

from __future__ import annotations

from matching.engine import ORDER_COLUMNS, SNAPSHOT_FORMAT, STOP_COLUMNS, OrderBook
from matching.models import MarketState
from matching.units import MarketUnits
from orders.models import Order, OrderStatus, Side

# Rows are read in chunks so a book of a million orders is never a million
# model instances at once.
CHUNK_ROWS = 20_000


def market_state_for(market) -> MarketState:
    state, _ = MarketState.objects.get_or_create(market=market)
    return state


RESTING_FIELDS = ("id", "user_id", "price", "quantity", "filled_quantity", "filled_notional", "type", "stp_mode")


def resting_row(units: MarketUnits, row) -> list:
    """A resting order's ``ORDER_COLUMNS`` row from its ``RESTING_FIELDS`` values."""
    order_id, user_id, price, quantity, filled, notional, order_type, stp_mode = row
    return [
        order_id,
        user_id,
        units.price_to_ticks(price),
        units.quantity_to_lots(quantity - filled),
        units.quantity_to_lots(filled),
        units.quote_to_tl(notional),
        order_type,
        stp_mode,
    ]


def stop_rows(market, units: MarketUnits) -> list[list]:
    """The market's untriggered stops as ``STOP_COLUMNS`` rows, by accepted sequence."""
    stops = []
    stop_fields = ("id", "user_id", "side", "type", "time_in_force", "price", "stop_price", "quantity",
                   "quote_quantity", "hold_amount", "stp_mode", "accepted_sequence")
    query = Order.objects.filter(market=market, status=OrderStatus.UNTRIGGERED).order_by("accepted_sequence")
    for row in query.values_list(*stop_fields).iterator(CHUNK_ROWS):
        order_id, user_id, side, order_type, tif, price, stop_price, quantity, quote_quantity, hold, stp, accepted = row
        quantity_lots, quote_limit_tl = engine_amounts(
            units, side=side, order_type=order_type, quantity=quantity, quote_quantity=quote_quantity, hold_amount=hold)
        stops.append([
            order_id,
            user_id,
            side,
            order_type,
            tif or "",
            units.price_to_ticks(price) if price is not None else 0,
            units.price_to_ticks(stop_price),
            quantity_lots or 0,
            quote_limit_tl or 0,
            stp,
            accepted,
        ])
    return stops


def snapshot_header(market, units: MarketUnits, state: MarketState) -> dict:
    """Everything of a book's snapshot but its orders, from the database."""
    return {
        "format": SNAPSHOT_FORMAT,
        "symbol": market.symbol,
        "sequence": state.last_sequence,
        "status": market.status,
        "stp_default": market.stp_default,
        "last_trade_price_ticks": units.price_to_ticks(state.last_price) if state.last_price is not None else 0,
        "order_columns": list(ORDER_COLUMNS),
        "stop_columns": list(STOP_COLUMNS),
    }


def database_snapshot(market) -> dict:
    units = MarketUnits.of(market)
    state = market_state_for(market)
    resting = Order.objects.filter(market=market, status__in=[OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED])

    def rows(side: str, price_order: str) -> list[list]:
        query = resting.filter(side=side).order_by(price_order, "priority_sequence").values_list(*RESTING_FIELDS)
        return [resting_row(units, row) for row in query.iterator(CHUNK_ROWS)]

    snapshot = snapshot_header(market, units, state)
    snapshot["bids"] = rows(Side.BUY, "-price")
    snapshot["asks"] = rows(Side.SELL, "price")
    snapshot["stops"] = stop_rows(market, units)
    return snapshot


def book_from_database(market) -> OrderBook:
    return OrderBook.restore(database_snapshot(market))


MARKET_LIKE = {"MARKET", "STOP_LOSS", "TAKE_PROFIT"}


def engine_amounts(units: MarketUnits, *, side, order_type, quantity, quote_quantity, hold_amount) -> tuple[int | None, int | None]:
    """The engine's (quantity_lots, quote_limit_tl) for an order row.

    Priced orders: their quantity. Market-like orders (see orders.rules): a
    buy by quantity is capped at the funds it holds; a buy by quote spends its
    quote amount; a sell by quote raises its quote amount with at most the
    base it holds; a sell by quantity sells its quantity.
    """
    if order_type not in MARKET_LIKE:
        return units.quantity_to_lots(quantity), None
    if side == Side.BUY:
        if quote_quantity is not None:
            return None, units.quote_to_tl(quote_quantity)
        return units.quantity_to_lots(quantity), units.quote_to_tl(hold_amount)
    if quote_quantity is not None:
        return units.quantity_to_lots(hold_amount), units.quote_to_tl(quote_quantity)
    return units.quantity_to_lots(quantity), None
