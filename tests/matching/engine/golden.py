"""Helpers for golden tests: terse commands and one readable line per event."""

from matching.engine import (
    GTC,
    LIMIT,
    LIMIT_MAKER,
    MARKET,
    NewOrder,
    OrderBook,
)


def render(event):
    """``'#7 TRADE price_ticks=101 ...'``: the sequence, the kind and every
    field but the timestamp; fields that are None are left out (each kind
    has a fixed set of fields, so this is still exact)."""
    fields = " ".join(
        f"{name}={value}"
        for name, value in zip(event._fields[2:], event[2:])
        if value is not None
    )
    return f"#{event.sequence} {event.kind} {fields}"


def play(book, *commands):
    """Apply ``commands``, checking invariants after each; return the
    rendered events of all of them."""
    lines = []
    for command in commands:
        events = book.apply(command)
        book.check_invariants()
        lines.extend(render(event) for event in events)
    return lines


def given(book, *commands):
    """Set the book up; the events are not what the test is about."""
    play(book, *commands)
    return book.sequence


def new_book(**options):
    return OrderBook("BTC-USDT", **options)


def limit(order_id, user_id, side, price_ticks, quantity_lots, time_in_force=GTC, **fields):
    return NewOrder(order_id, user_id, side, LIMIT, time_in_force, price_ticks, None, quantity_lots, **fields)


def maker(order_id, user_id, side, price_ticks, quantity_lots, **fields):
    return NewOrder(order_id, user_id, side, LIMIT_MAKER, GTC, price_ticks, None, quantity_lots, **fields)


def market(order_id, user_id, side, quantity_lots=None, quote_limit_tl=None, **fields):
    return NewOrder(
        order_id, user_id, side, MARKET, quantity_lots=quantity_lots, quote_limit_tl=quote_limit_tl, **fields
    )


def stop(order_id, user_id, side, order_type, stop_price_ticks, quantity_lots=None, **fields):
    return NewOrder(
        order_id, user_id, side, order_type, stop_price_ticks=stop_price_ticks, quantity_lots=quantity_lots, **fields
    )


def book_state(book):
    """Everything observable about the book except its sequence counter."""
    snapshot = book.snapshot()
    del snapshot["sequence"]
    return snapshot
