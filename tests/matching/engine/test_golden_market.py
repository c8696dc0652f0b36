"""Golden tests: MARKET orders by base quantity and by quote amount, with caps."""

from matching.engine import BUY, FOK, MARKET, SELL, NewOrder

from .golden import book_state, given, limit, market, new_book, play


def two_asks():
    book = new_book()
    given(book, limit(1, 10, SELL, 100, 5), limit(2, 11, SELL, 110, 5))
    return book


def test_market_buy_by_base_quantity_fills_across_levels():
    """A market buy of 7 lots takes 5 at 100 and 2 at 110 and is FILLED;
    ACCEPTED shows no price and no time in force (MARKET ignores it)."""
    book = two_asks()
    assert play(book, market(3, 20, BUY, quantity_lots=7)) == [
        "#5 ACCEPTED order_id=3 user_id=20 side=BUY order_type=MARKET quantity_lots=7 stp_mode=EXPIRE_TAKER status=NEW",
        "#6 TRADE price_ticks=100 quantity_lots=5 maker_order_id=1 maker_user_id=10 taker_order_id=3 taker_user_id=20 taker_side=BUY",
        "#7 FILLED order_id=1 user_id=10 quantity_lots_filled=5 notional_tl_filled=500",
        "#8 TRADE price_ticks=110 quantity_lots=2 maker_order_id=2 maker_user_id=11 taker_order_id=3 taker_user_id=20 taker_side=BUY",
        "#9 PARTIALLY_FILLED order_id=2 user_id=11 quantity_lots_filled=2 notional_tl_filled=220 quantity_lots_remaining=3",
        "#10 FILLED order_id=3 user_id=20 quantity_lots_filled=7 notional_tl_filled=720",
        "#11 BOOK_DELTA side=SELL price_ticks=100 quantity_lots=0",
        "#12 BOOK_DELTA side=SELL price_ticks=110 quantity_lots=3",
    ]


def test_market_buy_by_quote_stops_at_the_cap_with_a_partial_level():
    """Market buy by quote 780 tick-lots: 5 lots at 100 (500), then of the
    280 left floor(280 / 110) = 2 lots at 110 (220); 60 left cannot pay one
    more lot, so it ends EXPIRED (QUOTE_LIMIT_REACHED) having spent 720 <= 780."""
    book = two_asks()
    assert play(book, market(3, 20, BUY, quote_limit_tl=780)) == [
        "#5 ACCEPTED order_id=3 user_id=20 side=BUY order_type=MARKET quote_limit_tl=780 stp_mode=EXPIRE_TAKER status=NEW",
        "#6 TRADE price_ticks=100 quantity_lots=5 maker_order_id=1 maker_user_id=10 taker_order_id=3 taker_user_id=20 taker_side=BUY",
        "#7 FILLED order_id=1 user_id=10 quantity_lots_filled=5 notional_tl_filled=500",
        "#8 TRADE price_ticks=110 quantity_lots=2 maker_order_id=2 maker_user_id=11 taker_order_id=3 taker_user_id=20 taker_side=BUY",
        "#9 PARTIALLY_FILLED order_id=2 user_id=11 quantity_lots_filled=2 notional_tl_filled=220 quantity_lots_remaining=3",
        "#10 EXPIRED order_id=3 user_id=20 quantity_lots_filled=7 notional_tl_filled=720 reason=QUOTE_LIMIT_REACHED",
        "#11 BOOK_DELTA side=SELL price_ticks=100 quantity_lots=0",
        "#12 BOOK_DELTA side=SELL price_ticks=110 quantity_lots=3",
    ]


def test_market_buy_by_quote_that_spends_it_exactly_is_filled():
    """When the fills use the quote amount exactly, the order is FILLED."""
    book = two_asks()
    lines = play(book, market(3, 20, BUY, quote_limit_tl=720))
    assert lines[5] == "#10 FILLED order_id=3 user_id=20 quantity_lots_filled=7 notional_tl_filled=720"


def test_market_buy_by_base_never_spends_beyond_the_funds_held():
    """A market buy of 8 lots holding 700 tick-lots: 5 at 100, then only
    floor(200 / 110) = 1 at 110; it expires (QUOTE_LIMIT_REACHED) at 610."""
    book = two_asks()
    assert play(book, market(3, 20, BUY, quantity_lots=8, quote_limit_tl=700))[4:6] == [
        "#9 PARTIALLY_FILLED order_id=2 user_id=11 quantity_lots_filled=1 notional_tl_filled=110 quantity_lots_remaining=4",
        "#10 EXPIRED order_id=3 user_id=20 quantity_lots_filled=6 notional_tl_filled=610 reason=QUOTE_LIMIT_REACHED",
    ]


def test_market_sell_by_quote_with_base_cap():
    """A market sell to receive up to 450 tick-lots, holding 10 lots: 3 at
    100 (300), then floor(150 / 90) = 1 at 90; 60 left is below 90, so it
    stops at 390 received, 4 lots sold."""
    book = new_book()
    given(book, limit(1, 10, BUY, 100, 3), limit(2, 11, BUY, 90, 10))
    assert play(book, market(3, 20, SELL, quantity_lots=10, quote_limit_tl=450)) == [
        "#5 ACCEPTED order_id=3 user_id=20 side=SELL order_type=MARKET quantity_lots=10 quote_limit_tl=450 stp_mode=EXPIRE_TAKER status=NEW",
        "#6 TRADE price_ticks=100 quantity_lots=3 maker_order_id=1 maker_user_id=10 taker_order_id=3 taker_user_id=20 taker_side=SELL",
        "#7 FILLED order_id=1 user_id=10 quantity_lots_filled=3 notional_tl_filled=300",
        "#8 TRADE price_ticks=90 quantity_lots=1 maker_order_id=2 maker_user_id=11 taker_order_id=3 taker_user_id=20 taker_side=SELL",
        "#9 PARTIALLY_FILLED order_id=2 user_id=11 quantity_lots_filled=1 notional_tl_filled=90 quantity_lots_remaining=9",
        "#10 EXPIRED order_id=3 user_id=20 quantity_lots_filled=4 notional_tl_filled=390 reason=QUOTE_LIMIT_REACHED",
        "#11 BOOK_DELTA side=BUY price_ticks=100 quantity_lots=0",
        "#12 BOOK_DELTA side=BUY price_ticks=90 quantity_lots=9",
    ]


def test_market_sell_stopped_by_its_base_cap_is_filled():
    """When the quantity runs out before the quote amount, the order is FILLED."""
    book = new_book()
    given(book, limit(1, 10, BUY, 100, 3), limit(2, 11, BUY, 90, 10))
    lines = play(book, market(3, 20, SELL, quantity_lots=4, quote_limit_tl=10_000))
    assert lines[5] == "#10 FILLED order_id=3 user_id=20 quantity_lots_filled=4 notional_tl_filled=390"


def test_market_on_empty_book_expires_with_no_liquidity():
    """A market order never rests: on an empty side it is ACCEPTED then
    EXPIRED (NO_LIQUIDITY) with nothing filled, and the book is unchanged."""
    book = new_book()
    given(book, limit(1, 10, BUY, 100, 3))
    before = book_state(book)
    assert play(book, market(2, 20, BUY, quantity_lots=5)) == [
        "#3 ACCEPTED order_id=2 user_id=20 side=BUY order_type=MARKET quantity_lots=5 stp_mode=EXPIRE_TAKER status=NEW",
        "#4 EXPIRED order_id=2 user_id=20 quantity_lots_filled=0 notional_tl_filled=0 reason=NO_LIQUIDITY",
    ]
    assert book_state(book) == before


def test_market_larger_than_the_book_expires_its_rest():
    """A market order that empties the opposite side expires its unfilled
    rest (NO_LIQUIDITY) carrying what it did fill."""
    book = new_book()
    given(book, limit(1, 10, SELL, 100, 3))
    assert play(book, market(2, 20, BUY, quantity_lots=5))[3:] == [
        "#6 EXPIRED order_id=2 user_id=20 quantity_lots_filled=3 notional_tl_filled=300 reason=NO_LIQUIDITY",
        "#7 BOOK_DELTA side=SELL price_ticks=100 quantity_lots=0",
    ]


def test_market_whose_quote_cannot_pay_one_lot_trades_nothing():
    """A quote amount below the best price buys nothing: EXPIRED
    (QUOTE_LIMIT_REACHED), no trade, no delta."""
    book = two_asks()
    assert play(book, market(3, 20, BUY, quote_limit_tl=99)) == [
        "#5 ACCEPTED order_id=3 user_id=20 side=BUY order_type=MARKET quote_limit_tl=99 stp_mode=EXPIRE_TAKER status=NEW",
        "#6 EXPIRED order_id=3 user_id=20 quantity_lots_filled=0 notional_tl_filled=0 reason=QUOTE_LIMIT_REACHED",
    ]


def test_market_ignores_time_in_force():
    """time_in_force means nothing to a MARKET order: FOK is not applied
    (it partially fills) and ACCEPTED reports no time in force."""
    book = new_book()
    given(book, limit(1, 10, SELL, 100, 3))
    lines = play(book, NewOrder(2, 20, BUY, MARKET, FOK, quantity_lots=5))
    assert lines[0] == "#3 ACCEPTED order_id=2 user_id=20 side=BUY order_type=MARKET quantity_lots=5 stp_mode=EXPIRE_TAKER status=NEW"
    assert lines[3] == "#6 EXPIRED order_id=2 user_id=20 quantity_lots_filled=3 notional_tl_filled=300 reason=NO_LIQUIDITY"
