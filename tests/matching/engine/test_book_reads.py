"""Reads: best bid/ask, aggregated depth, membership, event helpers."""

import json

from matching.engine import BUY, SELL, OrderBook, event_from_dict, event_to_dict

from .golden import given, limit, market


def test_best_prices_and_depth_best_first():
    """best_bid/best_ask are the extremes; depth(n) aggregates each level
    and lists at most n levels per side, best first; depth() lists all."""
    book = OrderBook("BTC-USDT")
    assert (book.best_bid(), book.best_ask(), book.depth(5)) == (None, None, ([], []))
    given(
        book,
        limit(1, 1, BUY, 98, 1), limit(2, 1, BUY, 100, 2), limit(3, 2, BUY, 100, 3), limit(4, 1, BUY, 99, 4),
        limit(5, 1, SELL, 103, 1), limit(6, 2, SELL, 101, 2), limit(7, 1, SELL, 102, 3), limit(8, 1, SELL, 101, 4),
    )
    assert (book.best_bid(), book.best_ask()) == (100, 101)
    assert book.depth(2) == ([(100, 5), (99, 4)], [(101, 6), (102, 3)])
    assert book.depth() == ([(100, 5), (99, 4), (98, 1)], [(101, 6), (102, 3), (103, 1)])
    given(book, market(9, 3, BUY, quantity_lots=6))
    assert book.best_ask() == 102 and book.depth(1) == ([(100, 5)], [(102, 3)])


def test_membership_length_sequence_and_last_price():
    """``order_id in book`` and ``len(book)`` count open orders (resting and
    untriggered stops); ``sequence`` is the last event's; the last trade
    price starts as None."""
    book = OrderBook("BTC-USDT")
    assert (len(book), book.sequence, book.last_trade_price_ticks) == (0, 0, None)
    given(book, limit(1, 1, BUY, 100, 2), limit(2, 2, SELL, 100, 1))
    assert 1 in book and 2 not in book and len(book) == 1
    assert (book.sequence, book.last_trade_price_ticks) == (7, 100)


def test_events_round_trip_through_json():
    """event_to_dict gives a JSON-ready dict with the kind; event_from_dict
    rebuilds the same event."""
    book = OrderBook("BTC-USDT")
    given(book, limit(1, 1, SELL, 100, 2))
    for event in book.apply(limit(2, 2, BUY, 100, 1)):
        data = json.loads(json.dumps(event_to_dict(event)))
        assert data["kind"] == event.kind
        rebuilt = event_from_dict(data)
        assert type(rebuilt) is type(event) and rebuilt == event


def test_open_order_views_resting_orders_and_untriggered_stops():
    """open_order() reports what is open now: the remaining quantity of a
    partially filled resting order, a stop's own terms, and None once closed."""
    from matching.engine import STOP_LOSS_LIMIT, CancelOrder, NewOrder, OpenOrder, OrderBook

    book = OrderBook("T")
    book.apply(NewOrder(order_id=1, user_id=10, side="SELL", price_ticks=100, quantity_lots=5))
    book.apply(NewOrder(order_id=2, user_id=20, side="BUY", price_ticks=100, quantity_lots=2))
    book.apply(NewOrder(order_id=3, user_id=20, side="SELL", order_type=STOP_LOSS_LIMIT, price_ticks=89,
                        stop_price_ticks=90, quantity_lots=4))

    assert book.open_order(1) == OpenOrder(1, 10, "SELL", 100, 3, False)
    assert book.open_order(2) is None  # filled
    assert book.open_order(3) == OpenOrder(3, 20, "SELL", 89, 4, True)
    book.apply(CancelOrder(order_id=1, user_id=10))
    assert book.open_order(1) is None
