"""Golden tests: market status rules, input validation and duplicate ids."""

import pytest

from matching.engine import (
    BUY,
    FOK,
    IOC,
    LIMIT,
    LIMIT_MAKER,
    MARKET,
    SELL,
    STOP_LOSS,
    STOP_LOSS_LIMIT,
    AmendOrder,
    CancelAll,
    CancelOrder,
    NewOrder,
    SetMarketStatus,
)

from .golden import book_state, given, limit, market, new_book, play, stop


def book_in(status):
    """Bid 1 (user 10) at 100, ask 2 (user 20) at 102, a stop 3 of user 10; then ``status``."""
    book = new_book()
    given(book, limit(1, 10, BUY, 100, 5), limit(2, 20, SELL, 102, 5), stop(3, 10, SELL, STOP_LOSS, 90, 1))
    assert play(book, SetMarketStatus(status, timestamp=7)) == [
        f"#6 MARKET_STATUS_CHANGED status={status} previous_status=TRADING",
    ]
    assert book.status == status
    return book


def test_halted_refuses_orders_cancels_and_amends():
    """HALTED: NEW, CANCEL, CANCEL_ALL and AMEND are all refused with
    MARKET_HALTED, and the book does not change."""
    book = book_in("HALTED")
    before = book_state(book)
    assert play(
        book,
        limit(4, 30, BUY, 101, 1),
        CancelOrder(1, 10),
        CancelAll(10),
        AmendOrder(1, 10, quantity_lots=3),
    ) == [
        "#7 REJECTED order_id=4 user_id=30 reason=MARKET_HALTED quantity_lots_filled=0 notional_tl_filled=0",
        "#8 CANCEL_REJECTED order_id=1 user_id=10 reason=MARKET_HALTED",
        "#9 CANCEL_REJECTED user_id=10 reason=MARKET_HALTED",
        "#10 AMEND_REJECTED order_id=1 user_id=10 reason=MARKET_HALTED",
    ]
    assert book_state(book) == before


def test_cancel_only_allows_cancels_only():
    """CANCEL_ONLY: NEW and AMEND refused (MARKET_CANCEL_ONLY); CANCEL of
    an order and of a stop work."""
    book = book_in("CANCEL_ONLY")
    assert play(
        book,
        limit(4, 30, BUY, 99, 1),
        AmendOrder(1, 10, quantity_lots=3),
        CancelOrder(1, 10),
        CancelOrder(3, 10),
    ) == [
        "#7 REJECTED order_id=4 user_id=30 reason=MARKET_CANCEL_ONLY quantity_lots_filled=0 notional_tl_filled=0",
        "#8 AMEND_REJECTED order_id=1 user_id=10 reason=MARKET_CANCEL_ONLY",
        "#9 CANCELED order_id=1 user_id=10 quantity_lots_filled=0 notional_tl_filled=0 reason=CANCEL",
        "#10 BOOK_DELTA side=BUY price_ticks=100 quantity_lots=0",
        "#11 CANCELED order_id=3 user_id=10 quantity_lots_filled=0 notional_tl_filled=0 reason=CANCEL",
    ]


def test_post_only_accepts_only_orders_that_would_not_take():
    """POST_ONLY: a LIMIT that would cross is refused (POST_ONLY_WOULD_TAKE)
    like a LIMIT_MAKER; one that would not rests; an IOC that would not
    cross is accepted and expires; MARKET and stop orders are refused
    (MARKET_POST_ONLY); no trade happens."""
    book = book_in("POST_ONLY")
    assert play(
        book,
        limit(4, 30, BUY, 102, 1),
        limit(5, 30, BUY, 101, 1),
        limit(6, 30, SELL, 103, 1, IOC),
        market(7, 30, BUY, quantity_lots=1),
        stop(8, 30, BUY, STOP_LOSS, 120, 1),
    ) == [
        "#7 REJECTED order_id=4 user_id=30 reason=POST_ONLY_WOULD_TAKE quantity_lots_filled=0 notional_tl_filled=0",
        "#8 ACCEPTED order_id=5 user_id=30 side=BUY order_type=LIMIT time_in_force=GTC price_ticks=101 quantity_lots=1 stp_mode=EXPIRE_TAKER status=NEW",
        "#9 BOOK_DELTA side=BUY price_ticks=101 quantity_lots=1",
        "#10 ACCEPTED order_id=6 user_id=30 side=SELL order_type=LIMIT time_in_force=IOC price_ticks=103 quantity_lots=1 stp_mode=EXPIRE_TAKER status=NEW",
        "#11 EXPIRED order_id=6 user_id=30 quantity_lots_filled=0 notional_tl_filled=0 reason=IOC_REMAINDER",
        "#12 REJECTED order_id=7 user_id=30 reason=MARKET_POST_ONLY quantity_lots_filled=0 notional_tl_filled=0",
        "#13 REJECTED order_id=8 user_id=30 reason=MARKET_POST_ONLY quantity_lots_filled=0 notional_tl_filled=0",
    ]


def test_post_only_amend_that_would_cross_is_refused():
    """POST_ONLY: an amend that would take is refused; one that would not works."""
    book = book_in("POST_ONLY")
    assert play(book, AmendOrder(1, 10, price_ticks=102), AmendOrder(1, 10, price_ticks=101)) == [
        "#7 AMEND_REJECTED order_id=1 user_id=10 reason=POST_ONLY_WOULD_TAKE",
        "#8 AMENDED order_id=1 user_id=10 price_ticks=101 quantity_lots=5 quantity_lots_remaining=5 priority_kept=False",
        "#9 BOOK_DELTA side=BUY price_ticks=100 quantity_lots=0",
        "#10 BOOK_DELTA side=BUY price_ticks=101 quantity_lots=5",
    ]


def test_unknown_status_is_rejected_and_trading_resumes():
    """An unknown status is MARKET_STATUS_REJECTED and changes nothing;
    back to TRADING, crossing orders match again."""
    book = book_in("HALTED")
    assert play(book, SetMarketStatus("CLOSED"), SetMarketStatus("TRADING")) == [
        "#7 MARKET_STATUS_REJECTED status=CLOSED reason=INVALID_STATUS",
        "#8 MARKET_STATUS_CHANGED status=TRADING previous_status=HALTED",
    ]
    assert play(book, limit(4, 30, BUY, 102, 1))[1].startswith("#10 TRADE price_ticks=102")


def test_events_carry_the_command_timestamp():
    """Every event carries the timestamp of the command that caused it; the
    book reads no clock."""
    book = new_book()
    given(book, limit(1, 10, SELL, 100, 1, timestamp=111))
    events = book.apply(limit(2, 11, BUY, 100, 1, timestamp=222))
    assert {event.timestamp for event in events} == {222}


@pytest.mark.parametrize(
    "command, reason",
    [
        (NewOrder(0, 1, BUY, price_ticks=100, quantity_lots=1), "INVALID_ORDER_ID"),
        (NewOrder("7", 1, BUY, price_ticks=100, quantity_lots=1), "INVALID_ORDER_ID"),
        (NewOrder(9, -1, BUY, price_ticks=100, quantity_lots=1), "INVALID_USER_ID"),
        (NewOrder(9, True, BUY, price_ticks=100, quantity_lots=1), "INVALID_USER_ID"),
        (NewOrder(9, 1, "buy", price_ticks=100, quantity_lots=1), "INVALID_SIDE"),
        (NewOrder(9, 1, BUY, "ICEBERG", price_ticks=100, quantity_lots=1), "INVALID_ORDER_TYPE"),
        (NewOrder(9, 1, BUY, LIMIT, "GTD", price_ticks=100, quantity_lots=1), "INVALID_TIME_IN_FORCE"),
        (NewOrder(9, 1, BUY, LIMIT_MAKER, IOC, price_ticks=100, quantity_lots=1), "INVALID_TIME_IN_FORCE"),
        (NewOrder(9, 1, BUY, LIMIT, price_ticks=None, quantity_lots=1), "INVALID_PRICE"),
        (NewOrder(9, 1, BUY, LIMIT, price_ticks=100.0, quantity_lots=1), "INVALID_PRICE"),
        (NewOrder(9, 1, BUY, MARKET, price_ticks=100, quantity_lots=1), "INVALID_PRICE"),
        (NewOrder(9, 1, BUY, LIMIT, price_ticks=100, stop_price_ticks=90, quantity_lots=1), "INVALID_STOP_PRICE"),
        (NewOrder(9, 1, BUY, STOP_LOSS, quantity_lots=1), "INVALID_STOP_PRICE"),
        (NewOrder(9, 1, BUY, STOP_LOSS_LIMIT, FOK, stop_price_ticks=90, quantity_lots=1), "INVALID_PRICE"),
        (NewOrder(9, 1, BUY, LIMIT, price_ticks=100, quantity_lots=0), "INVALID_QUANTITY"),
        (NewOrder(9, 1, BUY, LIMIT, price_ticks=100, quantity_lots=True), "INVALID_QUANTITY"),
        (NewOrder(9, 1, BUY, MARKET, quantity_lots=-3), "INVALID_QUANTITY"),
        (NewOrder(9, 1, BUY, LIMIT, price_ticks=100, quantity_lots=1, quote_limit_tl=500), "INVALID_QUOTE_LIMIT"),
        (NewOrder(9, 1, BUY, MARKET, quote_limit_tl=1.5), "INVALID_QUOTE_LIMIT"),
        (NewOrder(9, 1, BUY, MARKET), "QUANTITY_OR_QUOTE_LIMIT_REQUIRED"),
        (NewOrder(9, 1, BUY, MARKET, quantity_lots=0, quote_limit_tl=0), "QUANTITY_OR_QUOTE_LIMIT_REQUIRED"),
        (NewOrder(9, 1, BUY, price_ticks=100, quantity_lots=1, stp_mode="CANCEL_NEWEST"), "INVALID_STP_MODE"),
    ],
)
def test_malformed_new_orders_are_rejected_with_a_reason(command, reason):
    """Each malformed NEW command is REJECTED with its reason code (no
    exception, floats and bools included) and the book does not change."""
    book = new_book()
    given(book, limit(1, 10, SELL, 101, 3))
    before = book_state(book)
    assert play(book, command) == [
        f"#3 REJECTED order_id={command.order_id} user_id={command.user_id} reason={reason} quantity_lots_filled=0 notional_tl_filled=0"
    ]
    assert book_state(book) == before


def test_zero_means_absent_for_optional_fields():
    """0 is accepted as "not applicable" (like None) for the fields that do
    not apply, and ACCEPTED normalises them to None."""
    book = new_book()
    command = NewOrder(1, 10, BUY, LIMIT, price_ticks=100, stop_price_ticks=0, quantity_lots=1, quote_limit_tl=0)
    assert play(book, command)[0] == (
        "#1 ACCEPTED order_id=1 user_id=10 side=BUY order_type=LIMIT time_in_force=GTC price_ticks=100 quantity_lots=1 stp_mode=EXPIRE_TAKER status=NEW"
    )


def test_duplicate_order_id_of_an_open_order_or_stop_is_rejected():
    """A NEW whose id is open in the book, resting or as an untriggered
    stop, is REJECTED (DUPLICATE_ORDER_ID) and the open order is untouched."""
    book = new_book()
    given(book, limit(1, 10, BUY, 100, 5), stop(2, 10, SELL, STOP_LOSS, 90, 1))
    before = book_state(book)
    assert play(book, limit(1, 10, SELL, 100, 5), market(2, 11, BUY, quantity_lots=1)) == [
        "#4 REJECTED order_id=1 user_id=10 reason=DUPLICATE_ORDER_ID quantity_lots_filled=0 notional_tl_filled=0",
        "#5 REJECTED order_id=2 user_id=11 reason=DUPLICATE_ORDER_ID quantity_lots_filled=0 notional_tl_filled=0",
    ]
    assert book_state(book) == before


def test_id_of_a_closed_order_is_not_remembered():
    """The book only knows open orders (remembering every id ever seen would
    grow without bound): the id of a canceled order is accepted again.
    Skipping commands already applied is the worker's job (docs/ENGINE.md)."""
    book = new_book()
    given(book, limit(1, 10, BUY, 100, 5), CancelOrder(1, 10))
    assert play(book, limit(1, 10, BUY, 100, 5))[0].startswith("#5 ACCEPTED order_id=1")


def test_unknown_command_type_is_a_programmer_error():
    """Only commands of the engine's types are accepted; anything else raises
    TypeError (a bug in the caller, not a user error)."""
    with pytest.raises(TypeError):
        new_book().apply(("NEW", 1, 2))
