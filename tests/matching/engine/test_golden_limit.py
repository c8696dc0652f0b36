"""Golden tests: LIMIT with GTC, IOC and FOK, and LIMIT_MAKER."""

from matching.engine import BUY, FOK, IOC, SELL

from .golden import book_state, given, limit, maker, new_book, play


def test_limit_on_empty_book_rests():
    """A GTC limit that meets nothing is ACCEPTED and rests: one BOOK_DELTA."""
    book = new_book()
    assert play(book, limit(1, 10, BUY, 100, 5)) == [
        "#1 ACCEPTED order_id=1 user_id=10 side=BUY order_type=LIMIT time_in_force=GTC price_ticks=100 quantity_lots=5 stp_mode=EXPIRE_TAKER status=NEW",
        "#2 BOOK_DELTA side=BUY price_ticks=100 quantity_lots=5",
    ]
    assert book.best_bid() == 100 and book.best_ask() is None


def test_gtc_sweeps_many_levels_in_price_time_order_then_rests():
    """A buy through three ask levels trades best price first and FIFO within
    a level, each trade at the maker's price (not the taker's 103); makers
    get FILLED with their totals; the taker's remainder rests with one
    PARTIALLY_FILLED carrying cumulative totals; deltas come last, one per
    changed level, in the order the levels were touched."""
    book = new_book()
    given(
        book,
        limit(1, 10, SELL, 101, 5),
        limit(2, 11, SELL, 101, 3),
        limit(3, 12, SELL, 102, 4),
        limit(4, 13, SELL, 103, 6),
    )
    assert play(book, limit(5, 20, BUY, 103, 20)) == [
        "#9 ACCEPTED order_id=5 user_id=20 side=BUY order_type=LIMIT time_in_force=GTC price_ticks=103 quantity_lots=20 stp_mode=EXPIRE_TAKER status=NEW",
        "#10 TRADE price_ticks=101 quantity_lots=5 maker_order_id=1 maker_user_id=10 taker_order_id=5 taker_user_id=20 taker_side=BUY",
        "#11 FILLED order_id=1 user_id=10 quantity_lots_filled=5 notional_tl_filled=505",
        "#12 TRADE price_ticks=101 quantity_lots=3 maker_order_id=2 maker_user_id=11 taker_order_id=5 taker_user_id=20 taker_side=BUY",
        "#13 FILLED order_id=2 user_id=11 quantity_lots_filled=3 notional_tl_filled=303",
        "#14 TRADE price_ticks=102 quantity_lots=4 maker_order_id=3 maker_user_id=12 taker_order_id=5 taker_user_id=20 taker_side=BUY",
        "#15 FILLED order_id=3 user_id=12 quantity_lots_filled=4 notional_tl_filled=408",
        "#16 TRADE price_ticks=103 quantity_lots=6 maker_order_id=4 maker_user_id=13 taker_order_id=5 taker_user_id=20 taker_side=BUY",
        "#17 FILLED order_id=4 user_id=13 quantity_lots_filled=6 notional_tl_filled=618",
        "#18 PARTIALLY_FILLED order_id=5 user_id=20 quantity_lots_filled=18 notional_tl_filled=1834 quantity_lots_remaining=2",
        "#19 BOOK_DELTA side=SELL price_ticks=101 quantity_lots=0",
        "#20 BOOK_DELTA side=SELL price_ticks=102 quantity_lots=0",
        "#21 BOOK_DELTA side=SELL price_ticks=103 quantity_lots=0",
        "#22 BOOK_DELTA side=BUY price_ticks=103 quantity_lots=2",
    ]
    assert book.depth() == ([(103, 2)], [])
    assert book.last_trade_price_ticks == 103


def test_taker_filled_leaves_maker_partially_filled():
    """When the taker runs out inside a maker, the maker gets
    PARTIALLY_FILLED (cumulative, with what remains) and keeps its place;
    the taker gets FILLED."""
    book = new_book()
    given(book, limit(1, 10, SELL, 101, 5), limit(2, 11, SELL, 101, 5))
    assert play(book, limit(3, 20, BUY, 101, 2)) == [
        "#5 ACCEPTED order_id=3 user_id=20 side=BUY order_type=LIMIT time_in_force=GTC price_ticks=101 quantity_lots=2 stp_mode=EXPIRE_TAKER status=NEW",
        "#6 TRADE price_ticks=101 quantity_lots=2 maker_order_id=1 maker_user_id=10 taker_order_id=3 taker_user_id=20 taker_side=BUY",
        "#7 PARTIALLY_FILLED order_id=1 user_id=10 quantity_lots_filled=2 notional_tl_filled=202 quantity_lots_remaining=3",
        "#8 FILLED order_id=3 user_id=20 quantity_lots_filled=2 notional_tl_filled=202",
        "#9 BOOK_DELTA side=SELL price_ticks=101 quantity_lots=8",
    ]
    # Order 1 is still first in the queue: the next buy meets it again.
    assert play(book, limit(4, 20, BUY, 101, 1))[1].endswith("maker_order_id=1 maker_user_id=10 taker_order_id=4 taker_user_id=20 taker_side=BUY")


def test_sell_taker_walks_bids_down():
    """A sell taker meets the highest bid first and trades at the bids' prices."""
    book = new_book()
    given(book, limit(1, 10, BUY, 99, 5), limit(2, 11, BUY, 100, 5))
    assert play(book, limit(3, 20, SELL, 98, 7)) == [
        "#5 ACCEPTED order_id=3 user_id=20 side=SELL order_type=LIMIT time_in_force=GTC price_ticks=98 quantity_lots=7 stp_mode=EXPIRE_TAKER status=NEW",
        "#6 TRADE price_ticks=100 quantity_lots=5 maker_order_id=2 maker_user_id=11 taker_order_id=3 taker_user_id=20 taker_side=SELL",
        "#7 FILLED order_id=2 user_id=11 quantity_lots_filled=5 notional_tl_filled=500",
        "#8 TRADE price_ticks=99 quantity_lots=2 maker_order_id=1 maker_user_id=10 taker_order_id=3 taker_user_id=20 taker_side=SELL",
        "#9 PARTIALLY_FILLED order_id=1 user_id=10 quantity_lots_filled=2 notional_tl_filled=198 quantity_lots_remaining=3",
        "#10 FILLED order_id=3 user_id=20 quantity_lots_filled=7 notional_tl_filled=698",
        "#11 BOOK_DELTA side=BUY price_ticks=100 quantity_lots=0",
        "#12 BOOK_DELTA side=BUY price_ticks=99 quantity_lots=3",
    ]


def test_ioc_fills_what_it_can_and_expires_the_rest():
    """IOC trades up to its limit price and expires its remainder
    (IOC_REMAINDER, with cumulative totals); it never rests."""
    book = new_book()
    given(book, limit(1, 10, SELL, 101, 3), limit(2, 10, SELL, 105, 3))
    assert play(book, limit(3, 20, BUY, 102, 5, IOC)) == [
        "#5 ACCEPTED order_id=3 user_id=20 side=BUY order_type=LIMIT time_in_force=IOC price_ticks=102 quantity_lots=5 stp_mode=EXPIRE_TAKER status=NEW",
        "#6 TRADE price_ticks=101 quantity_lots=3 maker_order_id=1 maker_user_id=10 taker_order_id=3 taker_user_id=20 taker_side=BUY",
        "#7 FILLED order_id=1 user_id=10 quantity_lots_filled=3 notional_tl_filled=303",
        "#8 EXPIRED order_id=3 user_id=20 quantity_lots_filled=3 notional_tl_filled=303 reason=IOC_REMAINDER",
        "#9 BOOK_DELTA side=SELL price_ticks=101 quantity_lots=0",
    ]
    assert book.best_bid() is None


def test_ioc_that_cannot_trade_is_accepted_then_expired():
    """An IOC that does not cross is ACCEPTED and EXPIRED with nothing
    filled; the book does not change, so there is no BOOK_DELTA."""
    book = new_book()
    given(book, limit(1, 10, SELL, 101, 3))
    assert play(book, limit(2, 20, BUY, 100, 5, IOC)) == [
        "#3 ACCEPTED order_id=2 user_id=20 side=BUY order_type=LIMIT time_in_force=IOC price_ticks=100 quantity_lots=5 stp_mode=EXPIRE_TAKER status=NEW",
        "#4 EXPIRED order_id=2 user_id=20 quantity_lots_filled=0 notional_tl_filled=0 reason=IOC_REMAINDER",
    ]


def test_fok_fills_completely_across_levels():
    """A FOK that the book can fill trades exactly like GTC and ends FILLED."""
    book = new_book()
    given(book, limit(1, 10, SELL, 101, 3), limit(2, 11, SELL, 102, 3))
    assert play(book, limit(3, 20, BUY, 102, 5, FOK)) == [
        "#5 ACCEPTED order_id=3 user_id=20 side=BUY order_type=LIMIT time_in_force=FOK price_ticks=102 quantity_lots=5 stp_mode=EXPIRE_TAKER status=NEW",
        "#6 TRADE price_ticks=101 quantity_lots=3 maker_order_id=1 maker_user_id=10 taker_order_id=3 taker_user_id=20 taker_side=BUY",
        "#7 FILLED order_id=1 user_id=10 quantity_lots_filled=3 notional_tl_filled=303",
        "#8 TRADE price_ticks=102 quantity_lots=2 maker_order_id=2 maker_user_id=11 taker_order_id=3 taker_user_id=20 taker_side=BUY",
        "#9 PARTIALLY_FILLED order_id=2 user_id=11 quantity_lots_filled=2 notional_tl_filled=204 quantity_lots_remaining=1",
        "#10 FILLED order_id=3 user_id=20 quantity_lots_filled=5 notional_tl_filled=507",
        "#11 BOOK_DELTA side=SELL price_ticks=101 quantity_lots=0",
        "#12 BOOK_DELTA side=SELL price_ticks=102 quantity_lots=1",
    ]


def test_fok_that_cannot_fill_trades_nothing_and_changes_nothing():
    """A FOK one lot short of what the book offers within its limit price
    is ACCEPTED then EXPIRED (FOK_NOT_FILLABLE): no TRADE, no BOOK_DELTA,
    and the book (orders, queues, last price) is exactly as before."""
    book = new_book()
    given(book, limit(1, 10, SELL, 101, 3), limit(2, 11, SELL, 102, 3), limit(3, 12, SELL, 103, 9))
    before = book_state(book)
    assert play(book, limit(4, 20, BUY, 102, 7, FOK)) == [
        "#7 ACCEPTED order_id=4 user_id=20 side=BUY order_type=LIMIT time_in_force=FOK price_ticks=102 quantity_lots=7 stp_mode=EXPIRE_TAKER status=NEW",
        "#8 EXPIRED order_id=4 user_id=20 quantity_lots_filled=0 notional_tl_filled=0 reason=FOK_NOT_FILLABLE",
    ]
    assert book_state(book) == before


def test_limit_maker_rests_when_it_does_not_cross():
    """LIMIT_MAKER that would not take liquidity rests like a GTC limit."""
    book = new_book()
    given(book, limit(1, 10, SELL, 101, 3))
    assert play(book, maker(2, 20, BUY, 100, 4)) == [
        "#3 ACCEPTED order_id=2 user_id=20 side=BUY order_type=LIMIT_MAKER time_in_force=GTC price_ticks=100 quantity_lots=4 stp_mode=EXPIRE_TAKER status=NEW",
        "#4 BOOK_DELTA side=BUY price_ticks=100 quantity_lots=4",
    ]


def test_limit_maker_that_would_cross_is_rejected_and_changes_nothing():
    """LIMIT_MAKER that would take (even at exactly the best ask) is
    REJECTED with POST_ONLY_WOULD_TAKE; the book does not change."""
    book = new_book()
    given(book, limit(1, 10, SELL, 101, 3))
    before = book_state(book)
    assert play(book, maker(2, 20, BUY, 101, 4)) == [
        "#3 REJECTED order_id=2 user_id=20 reason=POST_ONLY_WOULD_TAKE quantity_lots_filled=0 notional_tl_filled=0",
    ]
    assert book_state(book) == before
