"""Golden tests: STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT."""

import pytest

from matching.engine import (
    BUY,
    GTC,
    SELL,
    STOP_LOSS,
    STOP_LOSS_LIMIT,
    TAKE_PROFIT,
    TAKE_PROFIT_LIMIT,
    AmendOrder,
    CancelOrder,
    NewOrder,
)

from .golden import given, limit, market, new_book, play, stop


def book_with_last_price_100():
    """Sequences 1-7: one lot trades at 100, the book is empty again."""
    book = new_book()
    given(book, limit(1, 10, SELL, 100, 1), limit(2, 11, BUY, 100, 1))
    assert book.last_trade_price_ticks == 100 and book.sequence == 7
    return book


def test_stop_without_last_price_waits_untriggered():
    """Before the market's first trade a stop cannot trigger: it is
    ACCEPTED as UNTRIGGERED, does not touch the book (no BOOK_DELTA) and
    shows in the snapshot's stops."""
    book = new_book()
    assert play(book, stop(1, 10, SELL, STOP_LOSS, 95, 5)) == [
        "#1 ACCEPTED order_id=1 user_id=10 side=SELL order_type=STOP_LOSS stop_price_ticks=95 quantity_lots=5 stp_mode=EXPIRE_TAKER status=UNTRIGGERED",
    ]
    assert book.depth() == ([], []) and 1 in book
    assert [row[0] for row in book.snapshot()["stops"]] == [1]


@pytest.mark.parametrize(
    "side, order_type, rejected_stop, accepted_stop",
    [
        (BUY, STOP_LOSS, 100, 101),  # triggers when last >= stop
        (SELL, STOP_LOSS, 100, 99),  # triggers when last <= stop
        (BUY, TAKE_PROFIT, 100, 99),  # triggers when last <= stop
        (SELL, TAKE_PROFIT, 100, 101),  # triggers when last >= stop
    ],
)
def test_stop_whose_condition_already_holds_is_rejected(side, order_type, rejected_stop, accepted_stop):
    """With a last price of 100, a stop whose trigger condition already
    holds is REJECTED (WOULD_TRIGGER_IMMEDIATELY); one tick the other way
    it is accepted. This pins the trigger direction of each type."""
    book = book_with_last_price_100()
    assert play(book, stop(8, 30, side, order_type, rejected_stop, 1)) == [
        "#8 REJECTED order_id=8 user_id=30 reason=WOULD_TRIGGER_IMMEDIATELY quantity_lots_filled=0 notional_tl_filled=0",
    ]
    assert play(book, stop(9, 30, side, order_type, accepted_stop, 1))[0].endswith("status=UNTRIGGERED")


def test_stop_chain_trigger_trades_trigger_the_next_stop():
    """A market sell trades at 99 and triggers a STOP_LOSS at 99, which
    sells at 98 and triggers a STOP_LOSS_LIMIT at 98 (limit 97), which
    fills at 97. Each triggered stop runs to completion (TRIGGERED, trades,
    status) before the next; TRIGGERED names the price that triggered it;
    the deltas of the whole command come last."""
    book = book_with_last_price_100()
    given(
        book,
        limit(3, 20, BUY, 99, 2),
        limit(4, 21, BUY, 98, 2),
        limit(5, 22, BUY, 97, 5),
        stop(6, 30, SELL, STOP_LOSS, 99, 2),
        NewOrder(7, 31, SELL, STOP_LOSS_LIMIT, GTC, price_ticks=97, stop_price_ticks=98, quantity_lots=3),
    )
    assert play(book, market(8, 40, SELL, quantity_lots=2)) == [
        "#16 ACCEPTED order_id=8 user_id=40 side=SELL order_type=MARKET quantity_lots=2 stp_mode=EXPIRE_TAKER status=NEW",
        "#17 TRADE price_ticks=99 quantity_lots=2 maker_order_id=3 maker_user_id=20 taker_order_id=8 taker_user_id=40 taker_side=SELL",
        "#18 FILLED order_id=3 user_id=20 quantity_lots_filled=2 notional_tl_filled=198",
        "#19 FILLED order_id=8 user_id=40 quantity_lots_filled=2 notional_tl_filled=198",
        "#20 TRIGGERED order_id=6 user_id=30 trigger_price_ticks=99",
        "#21 TRADE price_ticks=98 quantity_lots=2 maker_order_id=4 maker_user_id=21 taker_order_id=6 taker_user_id=30 taker_side=SELL",
        "#22 FILLED order_id=4 user_id=21 quantity_lots_filled=2 notional_tl_filled=196",
        "#23 FILLED order_id=6 user_id=30 quantity_lots_filled=2 notional_tl_filled=196",
        "#24 TRIGGERED order_id=7 user_id=31 trigger_price_ticks=98",
        "#25 TRADE price_ticks=97 quantity_lots=3 maker_order_id=5 maker_user_id=22 taker_order_id=7 taker_user_id=31 taker_side=SELL",
        "#26 PARTIALLY_FILLED order_id=5 user_id=22 quantity_lots_filled=3 notional_tl_filled=291 quantity_lots_remaining=2",
        "#27 FILLED order_id=7 user_id=31 quantity_lots_filled=3 notional_tl_filled=291",
        "#28 BOOK_DELTA side=BUY price_ticks=99 quantity_lots=0",
        "#29 BOOK_DELTA side=BUY price_ticks=98 quantity_lots=0",
        "#30 BOOK_DELTA side=BUY price_ticks=97 quantity_lots=2",
    ]
    assert book.last_trade_price_ticks == 97 and len(book) == 1


def test_stops_triggered_together_run_in_accepted_order_not_stop_price_order():
    """One trade at 95 triggers three sell stops accepted in the order 96,
    98, 97 (neither ascending nor descending stop price): they run in
    accepted order, each to completion, and all report 95, the price that
    triggered them, although later ones trade at 94."""
    book = book_with_last_price_100()
    given(
        book,
        limit(3, 20, BUY, 95, 1),
        limit(4, 21, BUY, 94, 10),
        stop(5, 30, SELL, STOP_LOSS, 96, 1),
        stop(6, 31, SELL, STOP_LOSS, 98, 1),
        stop(7, 32, SELL, STOP_LOSS, 97, 1),
    )
    assert play(book, market(8, 40, SELL, quantity_lots=1)) == [
        "#15 ACCEPTED order_id=8 user_id=40 side=SELL order_type=MARKET quantity_lots=1 stp_mode=EXPIRE_TAKER status=NEW",
        "#16 TRADE price_ticks=95 quantity_lots=1 maker_order_id=3 maker_user_id=20 taker_order_id=8 taker_user_id=40 taker_side=SELL",
        "#17 FILLED order_id=3 user_id=20 quantity_lots_filled=1 notional_tl_filled=95",
        "#18 FILLED order_id=8 user_id=40 quantity_lots_filled=1 notional_tl_filled=95",
        "#19 TRIGGERED order_id=5 user_id=30 trigger_price_ticks=95",
        "#20 TRADE price_ticks=94 quantity_lots=1 maker_order_id=4 maker_user_id=21 taker_order_id=5 taker_user_id=30 taker_side=SELL",
        "#21 PARTIALLY_FILLED order_id=4 user_id=21 quantity_lots_filled=1 notional_tl_filled=94 quantity_lots_remaining=9",
        "#22 FILLED order_id=5 user_id=30 quantity_lots_filled=1 notional_tl_filled=94",
        "#23 TRIGGERED order_id=6 user_id=31 trigger_price_ticks=95",
        "#24 TRADE price_ticks=94 quantity_lots=1 maker_order_id=4 maker_user_id=21 taker_order_id=6 taker_user_id=31 taker_side=SELL",
        "#25 PARTIALLY_FILLED order_id=4 user_id=21 quantity_lots_filled=2 notional_tl_filled=188 quantity_lots_remaining=8",
        "#26 FILLED order_id=6 user_id=31 quantity_lots_filled=1 notional_tl_filled=94",
        "#27 TRIGGERED order_id=7 user_id=32 trigger_price_ticks=95",
        "#28 TRADE price_ticks=94 quantity_lots=1 maker_order_id=4 maker_user_id=21 taker_order_id=7 taker_user_id=32 taker_side=SELL",
        "#29 PARTIALLY_FILLED order_id=4 user_id=21 quantity_lots_filled=3 notional_tl_filled=282 quantity_lots_remaining=7",
        "#30 FILLED order_id=7 user_id=32 quantity_lots_filled=1 notional_tl_filled=94",
        "#31 BOOK_DELTA side=BUY price_ticks=95 quantity_lots=0",
        "#32 BOOK_DELTA side=BUY price_ticks=94 quantity_lots=7",
    ]


def test_buy_take_profit_triggers_on_a_fall_and_buys_at_market():
    """BUY TAKE_PROFIT at 99 triggers when the last price falls to 99 and
    executes as a MARKET buy."""
    book = book_with_last_price_100()
    given(book, limit(3, 20, BUY, 99, 1), limit(4, 21, SELL, 101, 5), stop(5, 30, BUY, TAKE_PROFIT, 99, 1))
    assert play(book, market(6, 40, SELL, quantity_lots=1)) == [
        "#13 ACCEPTED order_id=6 user_id=40 side=SELL order_type=MARKET quantity_lots=1 stp_mode=EXPIRE_TAKER status=NEW",
        "#14 TRADE price_ticks=99 quantity_lots=1 maker_order_id=3 maker_user_id=20 taker_order_id=6 taker_user_id=40 taker_side=SELL",
        "#15 FILLED order_id=3 user_id=20 quantity_lots_filled=1 notional_tl_filled=99",
        "#16 FILLED order_id=6 user_id=40 quantity_lots_filled=1 notional_tl_filled=99",
        "#17 TRIGGERED order_id=5 user_id=30 trigger_price_ticks=99",
        "#18 TRADE price_ticks=101 quantity_lots=1 maker_order_id=4 maker_user_id=21 taker_order_id=5 taker_user_id=30 taker_side=BUY",
        "#19 PARTIALLY_FILLED order_id=4 user_id=21 quantity_lots_filled=1 notional_tl_filled=101 quantity_lots_remaining=4",
        "#20 FILLED order_id=5 user_id=30 quantity_lots_filled=1 notional_tl_filled=101",
        "#21 BOOK_DELTA side=BUY price_ticks=99 quantity_lots=0",
        "#22 BOOK_DELTA side=SELL price_ticks=101 quantity_lots=4",
    ]


def test_sell_take_profit_limit_triggers_on_a_rise_and_rests_as_limit():
    """SELL TAKE_PROFIT_LIMIT (stop 102, limit 105) triggers when the last
    price rises to 102 and becomes a GTC LIMIT that rests at 105: TRIGGERED,
    then only its BOOK_DELTA (it stays NEW, nothing filled)."""
    book = book_with_last_price_100()
    given(
        book,
        limit(3, 20, SELL, 102, 1),
        NewOrder(4, 30, SELL, TAKE_PROFIT_LIMIT, GTC, price_ticks=105, stop_price_ticks=102, quantity_lots=2),
    )
    assert play(book, limit(5, 40, BUY, 102, 1)) == [
        "#11 ACCEPTED order_id=5 user_id=40 side=BUY order_type=LIMIT time_in_force=GTC price_ticks=102 quantity_lots=1 stp_mode=EXPIRE_TAKER status=NEW",
        "#12 TRADE price_ticks=102 quantity_lots=1 maker_order_id=3 maker_user_id=20 taker_order_id=5 taker_user_id=40 taker_side=BUY",
        "#13 FILLED order_id=3 user_id=20 quantity_lots_filled=1 notional_tl_filled=102",
        "#14 FILLED order_id=5 user_id=40 quantity_lots_filled=1 notional_tl_filled=102",
        "#15 TRIGGERED order_id=4 user_id=30 trigger_price_ticks=102",
        "#16 BOOK_DELTA side=SELL price_ticks=102 quantity_lots=0",
        "#17 BOOK_DELTA side=SELL price_ticks=105 quantity_lots=2",
    ]
    assert book.snapshot()["asks"] == [[4, 30, 105, 2, 0, 0, "TAKE_PROFIT_LIMIT", "EXPIRE_TAKER"]]


def test_triggered_stop_with_no_liquidity_expires():
    """A stop triggered by the trade that emptied the opposite side expires
    (NO_LIQUIDITY) right after its TRIGGERED."""
    book = book_with_last_price_100()
    given(book, limit(3, 20, BUY, 99, 1), stop(4, 30, SELL, STOP_LOSS, 99, 3))
    assert play(book, market(5, 40, SELL, quantity_lots=1))[4:] == [
        "#15 TRIGGERED order_id=4 user_id=30 trigger_price_ticks=99",
        "#16 EXPIRED order_id=4 user_id=30 quantity_lots_filled=0 notional_tl_filled=0 reason=NO_LIQUIDITY",
        "#17 BOOK_DELTA side=BUY price_ticks=99 quantity_lots=0",
    ]


def test_stop_accepted_before_any_trade_triggers_at_the_first_trade_with_its_quote_limit():
    """A BUY STOP_LOSS placed before the first trade triggers when that
    trade prints 100 (>= 100) and runs as a MARKET buy by quote: 1000
    tick-lots buy floor(1000 / 101) = 9 lots at 101."""
    book = new_book()
    given(book, NewOrder(1, 30, BUY, STOP_LOSS, stop_price_ticks=100, quote_limit_tl=1000))
    given(book, limit(2, 10, SELL, 100, 1), limit(3, 11, SELL, 101, 20))
    assert play(book, limit(4, 12, BUY, 100, 1))[4:] == [
        "#10 TRIGGERED order_id=1 user_id=30 trigger_price_ticks=100",
        "#11 TRADE price_ticks=101 quantity_lots=9 maker_order_id=3 maker_user_id=11 taker_order_id=1 taker_user_id=30 taker_side=BUY",
        "#12 PARTIALLY_FILLED order_id=3 user_id=11 quantity_lots_filled=9 notional_tl_filled=909 quantity_lots_remaining=11",
        "#13 EXPIRED order_id=1 user_id=30 quantity_lots_filled=9 notional_tl_filled=909 reason=QUOTE_LIMIT_REACHED",
        "#14 BOOK_DELTA side=SELL price_ticks=100 quantity_lots=0",
        "#15 BOOK_DELTA side=SELL price_ticks=101 quantity_lots=11",
    ]


def test_untriggered_stop_can_be_canceled_but_not_amended():
    """CANCEL of an untriggered stop: CANCELED with zero fills and no
    BOOK_DELTA (it was never in the book). AMEND is refused
    (AMEND_NOT_SUPPORTED) and leaves the stop as it was."""
    book = book_with_last_price_100()
    given(book, stop(8, 30, SELL, STOP_LOSS, 95, 5))
    assert play(book, AmendOrder(8, 30, quantity_lots=3)) == [
        "#9 AMEND_REJECTED order_id=8 user_id=30 reason=AMEND_NOT_SUPPORTED",
    ]
    assert play(book, CancelOrder(8, 30)) == [
        "#10 CANCELED order_id=8 user_id=30 quantity_lots_filled=0 notional_tl_filled=0 reason=CANCEL",
    ]
    assert 8 not in book and book.snapshot()["stops"] == []
