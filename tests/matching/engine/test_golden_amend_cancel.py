"""Golden tests: AMEND priority rules, CANCEL and CANCEL_ALL."""

import pytest

from matching.engine import BUY, SELL, STOP_LOSS, AmendOrder, CancelAll, CancelOrder

from .golden import book_state, given, limit, maker, new_book, play, stop


def two_bids_at_100():
    """Order 1 (user 10) then order 2 (user 11), both BUY 5 at 100."""
    book = new_book()
    given(book, limit(1, 10, BUY, 100, 5), limit(2, 11, BUY, 100, 5))
    return book


def next_maker_at_100(book, order_id):
    """The maker a one-lot sell at 100 meets first."""
    line = play(book, limit(order_id, 99, SELL, 100, 1))[1]
    return int(line.split("maker_order_id=")[1].split()[0])


def test_amend_quantity_down_keeps_priority():
    """Quantity down at the same price: AMENDED with priority_kept=True,
    the level shrinks, and the order is still first in its queue."""
    book = two_bids_at_100()
    assert play(book, AmendOrder(1, 10, quantity_lots=3)) == [
        "#5 AMENDED order_id=1 user_id=10 price_ticks=100 quantity_lots=3 quantity_lots_remaining=3 priority_kept=True",
        "#6 BOOK_DELTA side=BUY price_ticks=100 quantity_lots=8",
    ]
    assert next_maker_at_100(book, 3) == 1


def test_amend_quantity_up_loses_priority():
    """Quantity up: AMENDED with priority_kept=False; the order goes to
    the back of its level, behind order 2."""
    book = two_bids_at_100()
    assert play(book, AmendOrder(1, 10, quantity_lots=7)) == [
        "#5 AMENDED order_id=1 user_id=10 price_ticks=100 quantity_lots=7 quantity_lots_remaining=7 priority_kept=False",
        "#6 BOOK_DELTA side=BUY price_ticks=100 quantity_lots=12",
    ]
    assert next_maker_at_100(book, 3) == 2


def test_amend_price_change_moves_the_order_to_its_new_level():
    """A price change loses priority and moves the order: one delta for the
    old level, one for the new."""
    book = two_bids_at_100()
    assert play(book, AmendOrder(1, 10, price_ticks=99)) == [
        "#5 AMENDED order_id=1 user_id=10 price_ticks=99 quantity_lots=5 quantity_lots_remaining=5 priority_kept=False",
        "#6 BOOK_DELTA side=BUY price_ticks=100 quantity_lots=5",
        "#7 BOOK_DELTA side=BUY price_ticks=99 quantity_lots=5",
    ]
    assert book.depth() == ([(100, 5), (99, 5)], [])


def test_amend_price_back_to_the_same_level_goes_to_the_back():
    """Amending away and back to the same price still loses priority."""
    book = two_bids_at_100()
    given(book, AmendOrder(1, 10, price_ticks=99), AmendOrder(1, 10, price_ticks=100))
    assert next_maker_at_100(book, 3) == 2


def test_amend_price_that_crosses_matches_as_taker_then_rests():
    """Re-pricing a bid to 102 crosses the ask at 102: AMENDED (remaining
    before matching), then the trade with the order as taker, then its
    PARTIALLY_FILLED; the remainder rests at 102."""
    book = two_bids_at_100()
    given(book, limit(3, 20, SELL, 102, 2), limit(4, 21, SELL, 103, 10))
    assert play(book, AmendOrder(1, 10, price_ticks=102)) == [
        "#9 AMENDED order_id=1 user_id=10 price_ticks=102 quantity_lots=5 quantity_lots_remaining=5 priority_kept=False",
        "#10 TRADE price_ticks=102 quantity_lots=2 maker_order_id=3 maker_user_id=20 taker_order_id=1 taker_user_id=10 taker_side=BUY",
        "#11 FILLED order_id=3 user_id=20 quantity_lots_filled=2 notional_tl_filled=204",
        "#12 PARTIALLY_FILLED order_id=1 user_id=10 quantity_lots_filled=2 notional_tl_filled=204 quantity_lots_remaining=3",
        "#13 BOOK_DELTA side=BUY price_ticks=100 quantity_lots=5",
        "#14 BOOK_DELTA side=SELL price_ticks=102 quantity_lots=0",
        "#15 BOOK_DELTA side=BUY price_ticks=102 quantity_lots=3",
    ]


def test_limit_maker_amend_that_would_cross_is_rejected_and_changes_nothing():
    """A LIMIT_MAKER re-priced across the spread is refused
    (POST_ONLY_WOULD_TAKE) and keeps its price, quantity and place."""
    book = new_book()
    given(book, maker(1, 10, BUY, 100, 5), limit(2, 20, SELL, 102, 2))
    before = book_state(book)
    assert play(book, AmendOrder(1, 10, price_ticks=102)) == [
        "#5 AMEND_REJECTED order_id=1 user_id=10 reason=POST_ONLY_WOULD_TAKE",
    ]
    assert book_state(book) == before
    assert play(book, AmendOrder(1, 10, price_ticks=101))[0].startswith("#6 AMENDED order_id=1")


def test_amend_total_quantity_counts_what_already_filled():
    """The amended quantity is the new TOTAL: with 2 of 5 filled, a total
    of 2 is refused (QUANTITY_NOT_ABOVE_FILLED), a total of 3 leaves 1
    open and keeps priority, a total of 10 leaves 8 open."""
    book = new_book()
    given(book, limit(1, 10, BUY, 100, 5), limit(2, 20, SELL, 100, 2))
    assert play(book, AmendOrder(1, 10, quantity_lots=2)) == [
        "#8 AMEND_REJECTED order_id=1 user_id=10 reason=QUANTITY_NOT_ABOVE_FILLED",
    ]
    assert play(book, AmendOrder(1, 10, quantity_lots=3)) == [
        "#9 AMENDED order_id=1 user_id=10 price_ticks=100 quantity_lots=3 quantity_lots_remaining=1 priority_kept=True",
        "#10 BOOK_DELTA side=BUY price_ticks=100 quantity_lots=1",
    ]
    assert play(book, AmendOrder(1, 10, quantity_lots=10)) == [
        "#11 AMENDED order_id=1 user_id=10 price_ticks=100 quantity_lots=10 quantity_lots_remaining=8 priority_kept=False",
        "#12 BOOK_DELTA side=BUY price_ticks=100 quantity_lots=8",
    ]


@pytest.mark.parametrize(
    "command, reason",
    [
        (AmendOrder(1, 11, quantity_lots=3), "UNKNOWN_ORDER"),  # someone else's order
        (AmendOrder(77, 10, quantity_lots=3), "UNKNOWN_ORDER"),
        (AmendOrder(1, 10), "NOTHING_TO_AMEND"),
        (AmendOrder(1, 10, price_ticks=100, quantity_lots=5), "NOTHING_TO_AMEND"),
        (AmendOrder(1, 10, price_ticks=0), "INVALID_PRICE"),
        (AmendOrder(1, 10, quantity_lots=0), "INVALID_QUANTITY"),
        (AmendOrder(1, 10, quantity_lots=2.5), "INVALID_QUANTITY"),
    ],
)
def test_amend_rejections_leave_the_order_unchanged(command, reason):
    """Refused amends are AMEND_REJECTED events with a reason; another
    user's order is indistinguishable from a missing one."""
    book = new_book()
    given(book, limit(1, 10, BUY, 100, 5))
    before = book_state(book)
    assert play(book, command) == [f"#3 AMEND_REJECTED order_id={command.order_id} user_id={command.user_id} reason={reason}"]
    assert book_state(book) == before


def test_cancel_reports_fill_totals_and_level_change():
    """CANCEL of a partially filled order: CANCELED with its cumulative
    fills (reason CANCEL) and the level's new total."""
    book = new_book()
    given(book, limit(1, 10, BUY, 100, 5), limit(2, 11, BUY, 100, 1), limit(3, 20, SELL, 100, 2))
    assert play(book, CancelOrder(1, 10)) == [
        "#10 CANCELED order_id=1 user_id=10 quantity_lots_filled=2 notional_tl_filled=200 reason=CANCEL",
        "#11 BOOK_DELTA side=BUY price_ticks=100 quantity_lots=1",
    ]


def test_cancel_from_the_middle_of_a_level_keeps_the_others_in_order():
    """Removing the middle order of a FIFO queue leaves the first and third
    in order."""
    book = new_book()
    given(book, limit(1, 10, BUY, 100, 1), limit(2, 11, BUY, 100, 1), limit(3, 12, BUY, 100, 1))
    given(book, CancelOrder(2, 11))
    assert next_maker_at_100(book, 4) == 1
    assert next_maker_at_100(book, 5) == 3


def test_cancel_rejections_reveal_nothing():
    """Cancel of another user's order, an unknown id or an order already
    closed: CANCEL_REJECTED (UNKNOWN_ORDER), and the order stays."""
    book = new_book()
    given(book, limit(1, 10, BUY, 100, 5))
    assert play(book, CancelOrder(1, 11), CancelOrder(42, 10), CancelOrder(1, 10), CancelOrder(1, 10)) == [
        "#3 CANCEL_REJECTED order_id=1 user_id=11 reason=UNKNOWN_ORDER",
        "#4 CANCEL_REJECTED order_id=42 user_id=10 reason=UNKNOWN_ORDER",
        "#5 CANCELED order_id=1 user_id=10 quantity_lots_filled=0 notional_tl_filled=0 reason=CANCEL",
        "#6 BOOK_DELTA side=BUY price_ticks=100 quantity_lots=0",
        "#7 CANCEL_REJECTED order_id=1 user_id=10 reason=UNKNOWN_ORDER",
    ]


def test_cancel_all_cancels_orders_and_stops_of_one_user_in_id_order():
    """CANCEL_ALL: one CANCELED per open order and untriggered stop of the
    user, in ascending order_id (whatever the order they were placed in),
    then one BOOK_DELTA per changed level; other users' orders stay. A
    second CANCEL_ALL has nothing to do and emits nothing."""
    book = new_book()
    given(
        book,
        limit(3, 10, BUY, 100, 1),
        limit(1, 10, BUY, 99, 2),
        stop(2, 10, SELL, STOP_LOSS, 90, 1),
        limit(4, 11, BUY, 100, 5),
        limit(5, 10, SELL, 110, 3),
    )
    assert play(book, CancelAll(10)) == [
        "#10 CANCELED order_id=1 user_id=10 quantity_lots_filled=0 notional_tl_filled=0 reason=CANCEL_ALL",
        "#11 CANCELED order_id=2 user_id=10 quantity_lots_filled=0 notional_tl_filled=0 reason=CANCEL_ALL",
        "#12 CANCELED order_id=3 user_id=10 quantity_lots_filled=0 notional_tl_filled=0 reason=CANCEL_ALL",
        "#13 CANCELED order_id=5 user_id=10 quantity_lots_filled=0 notional_tl_filled=0 reason=CANCEL_ALL",
        "#14 BOOK_DELTA side=BUY price_ticks=99 quantity_lots=0",
        "#15 BOOK_DELTA side=BUY price_ticks=100 quantity_lots=5",
        "#16 BOOK_DELTA side=SELL price_ticks=110 quantity_lots=0",
    ]
    assert book.depth() == ([(100, 5)], []) and len(book) == 1
    assert play(book, CancelAll(10)) == []
    assert book.sequence == 16
