"""Golden tests: self-trade prevention modes, the market default, and FOK with STP."""

import pytest

from matching.engine import BUY, FOK, SELL

from .golden import book_state, given, limit, new_book, play


def own_then_other(**options):
    """Asks at 101: order 1 of user 1 (first in the queue), order 2 of user 2."""
    book = new_book(**options)
    given(book, limit(1, 1, SELL, 101, 5), limit(2, 2, SELL, 101, 5))
    return book


def test_stp_none_trades_with_own_order():
    """NONE: the taker's own resting order is an ordinary maker."""
    book = own_then_other()
    assert play(book, limit(3, 1, BUY, 101, 8, stp_mode="NONE")) == [
        "#5 ACCEPTED order_id=3 user_id=1 side=BUY order_type=LIMIT time_in_force=GTC price_ticks=101 quantity_lots=8 stp_mode=NONE status=NEW",
        "#6 TRADE price_ticks=101 quantity_lots=5 maker_order_id=1 maker_user_id=1 taker_order_id=3 taker_user_id=1 taker_side=BUY",
        "#7 FILLED order_id=1 user_id=1 quantity_lots_filled=5 notional_tl_filled=505",
        "#8 TRADE price_ticks=101 quantity_lots=3 maker_order_id=2 maker_user_id=2 taker_order_id=3 taker_user_id=1 taker_side=BUY",
        "#9 PARTIALLY_FILLED order_id=2 user_id=2 quantity_lots_filled=3 notional_tl_filled=303 quantity_lots_remaining=2",
        "#10 FILLED order_id=3 user_id=1 quantity_lots_filled=8 notional_tl_filled=808",
        "#11 BOOK_DELTA side=SELL price_ticks=101 quantity_lots=2",
    ]


def test_stp_expire_taker_expires_the_taker_and_keeps_the_maker():
    """EXPIRE_TAKER: meeting its own order, the taker's remainder expires
    (even a GTC does not rest); the maker stays, so no BOOK_DELTA."""
    book = own_then_other()
    assert play(book, limit(3, 1, BUY, 101, 8, stp_mode="EXPIRE_TAKER")) == [
        "#5 ACCEPTED order_id=3 user_id=1 side=BUY order_type=LIMIT time_in_force=GTC price_ticks=101 quantity_lots=8 stp_mode=EXPIRE_TAKER status=NEW",
        "#6 EXPIRED order_id=3 user_id=1 quantity_lots_filled=0 notional_tl_filled=0 reason=SELF_TRADE_PREVENTION",
    ]
    assert book.depth() == ([], [(101, 10)])


def test_stp_expire_maker_expires_own_maker_and_continues():
    """EXPIRE_MAKER: the own maker is EXPIRED and matching continues with
    the next maker; the taker's remainder then rests as usual."""
    book = own_then_other()
    assert play(book, limit(3, 1, BUY, 101, 8, stp_mode="EXPIRE_MAKER")) == [
        "#5 ACCEPTED order_id=3 user_id=1 side=BUY order_type=LIMIT time_in_force=GTC price_ticks=101 quantity_lots=8 stp_mode=EXPIRE_MAKER status=NEW",
        "#6 EXPIRED order_id=1 user_id=1 quantity_lots_filled=0 notional_tl_filled=0 reason=SELF_TRADE_PREVENTION",
        "#7 TRADE price_ticks=101 quantity_lots=5 maker_order_id=2 maker_user_id=2 taker_order_id=3 taker_user_id=1 taker_side=BUY",
        "#8 FILLED order_id=2 user_id=2 quantity_lots_filled=5 notional_tl_filled=505",
        "#9 PARTIALLY_FILLED order_id=3 user_id=1 quantity_lots_filled=5 notional_tl_filled=505 quantity_lots_remaining=3",
        "#10 BOOK_DELTA side=SELL price_ticks=101 quantity_lots=0",
        "#11 BOOK_DELTA side=BUY price_ticks=101 quantity_lots=3",
    ]


def test_stp_expire_both_expires_maker_then_taker():
    """EXPIRE_BOTH: the own maker is EXPIRED, then the taker."""
    book = own_then_other()
    assert play(book, limit(3, 1, BUY, 101, 8, stp_mode="EXPIRE_BOTH")) == [
        "#5 ACCEPTED order_id=3 user_id=1 side=BUY order_type=LIMIT time_in_force=GTC price_ticks=101 quantity_lots=8 stp_mode=EXPIRE_BOTH status=NEW",
        "#6 EXPIRED order_id=1 user_id=1 quantity_lots_filled=0 notional_tl_filled=0 reason=SELF_TRADE_PREVENTION",
        "#7 EXPIRED order_id=3 user_id=1 quantity_lots_filled=0 notional_tl_filled=0 reason=SELF_TRADE_PREVENTION",
        "#8 BOOK_DELTA side=SELL price_ticks=101 quantity_lots=5",
    ]


@pytest.mark.parametrize("default", ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"])
def test_stp_mode_none_on_the_command_uses_the_market_default(default):
    """A command without an STP mode gets the market's default, reported in
    ACCEPTED and applied exactly as if the command had named it."""
    explicit = own_then_other(stp_default="NONE")
    defaulted = own_then_other(stp_default=default)
    assert play(defaulted, limit(3, 1, BUY, 101, 8)) == play(explicit, limit(3, 1, BUY, 101, 8, stp_mode=default))


def test_stp_decided_by_the_taker_not_the_maker():
    """The maker's own STP mode does not matter: a NONE taker trades with a
    maker of the same user that was placed with EXPIRE_BOTH."""
    book = new_book()
    given(book, limit(1, 1, SELL, 101, 5, stp_mode="EXPIRE_BOTH"))
    assert play(book, limit(2, 1, BUY, 101, 5, stp_mode="NONE"))[1].startswith("#4 TRADE price_ticks=101 quantity_lots=5")


def test_stp_after_fills_expires_taker_with_its_totals():
    """EXPIRE_TAKER after some fills: the EXPIRED carries what the taker
    filled before it met its own order."""
    book = new_book()
    given(book, limit(1, 2, SELL, 100, 3), limit(2, 1, SELL, 101, 5))
    assert play(book, limit(3, 1, BUY, 102, 10, stp_mode="EXPIRE_TAKER")) == [
        "#5 ACCEPTED order_id=3 user_id=1 side=BUY order_type=LIMIT time_in_force=GTC price_ticks=102 quantity_lots=10 stp_mode=EXPIRE_TAKER status=NEW",
        "#6 TRADE price_ticks=100 quantity_lots=3 maker_order_id=1 maker_user_id=2 taker_order_id=3 taker_user_id=1 taker_side=BUY",
        "#7 FILLED order_id=1 user_id=2 quantity_lots_filled=3 notional_tl_filled=300",
        "#8 EXPIRED order_id=3 user_id=1 quantity_lots_filled=3 notional_tl_filled=300 reason=SELF_TRADE_PREVENTION",
        "#9 BOOK_DELTA side=SELL price_ticks=100 quantity_lots=0",
    ]


def test_stp_expired_maker_carries_its_earlier_fills():
    """A partially filled maker expired by EXPIRE_MAKER reports its
    cumulative fills, so the ledger can release the rest of its hold."""
    book = new_book()
    given(book, limit(1, 1, SELL, 101, 5), limit(2, 2, BUY, 101, 2))
    assert play(book, limit(3, 1, BUY, 101, 1, stp_mode="EXPIRE_MAKER")) == [
        "#8 ACCEPTED order_id=3 user_id=1 side=BUY order_type=LIMIT time_in_force=GTC price_ticks=101 quantity_lots=1 stp_mode=EXPIRE_MAKER status=NEW",
        "#9 EXPIRED order_id=1 user_id=1 quantity_lots_filled=2 notional_tl_filled=202 reason=SELF_TRADE_PREVENTION",
        "#10 BOOK_DELTA side=SELL price_ticks=101 quantity_lots=0",
        "#11 BOOK_DELTA side=BUY price_ticks=101 quantity_lots=1",
    ]


def test_fok_expire_maker_counts_only_other_users_and_expires_own_makers_when_it_fills():
    """FOK decides on what matching would really do: with EXPIRE_MAKER its
    own orders do not count; when the others suffice, it executes and its
    own maker in the way is expired as in any match."""
    book = own_then_other()
    assert play(book, limit(3, 1, BUY, 101, 5, FOK, stp_mode="EXPIRE_MAKER")) == [
        "#5 ACCEPTED order_id=3 user_id=1 side=BUY order_type=LIMIT time_in_force=FOK price_ticks=101 quantity_lots=5 stp_mode=EXPIRE_MAKER status=NEW",
        "#6 EXPIRED order_id=1 user_id=1 quantity_lots_filled=0 notional_tl_filled=0 reason=SELF_TRADE_PREVENTION",
        "#7 TRADE price_ticks=101 quantity_lots=5 maker_order_id=2 maker_user_id=2 taker_order_id=3 taker_user_id=1 taker_side=BUY",
        "#8 FILLED order_id=2 user_id=2 quantity_lots_filled=5 notional_tl_filled=505",
        "#9 FILLED order_id=3 user_id=1 quantity_lots_filled=5 notional_tl_filled=505",
        "#10 BOOK_DELTA side=SELL price_ticks=101 quantity_lots=0",
    ]


def test_fok_expire_maker_not_fillable_expires_nobody():
    """FOK with EXPIRE_MAKER that the other users cannot fill: EXPIRED
    (FOK_NOT_FILLABLE) and its own maker is NOT expired; nothing changes."""
    book = own_then_other()
    before = book_state(book)
    assert play(book, limit(3, 1, BUY, 101, 6, FOK, stp_mode="EXPIRE_MAKER")) == [
        "#5 ACCEPTED order_id=3 user_id=1 side=BUY order_type=LIMIT time_in_force=FOK price_ticks=101 quantity_lots=6 stp_mode=EXPIRE_MAKER status=NEW",
        "#6 EXPIRED order_id=3 user_id=1 quantity_lots_filled=0 notional_tl_filled=0 reason=FOK_NOT_FILLABLE",
    ]
    assert book_state(book) == before


@pytest.mark.parametrize("mode", ["EXPIRE_TAKER", "EXPIRE_BOTH"])
def test_fok_expire_taker_or_both_fills_only_before_reaching_own_order(mode):
    """FOK with EXPIRE_TAKER/EXPIRE_BOTH: fillable only from the makers
    ahead of its own order (matching would stop there)."""
    book = new_book()
    given(book, limit(1, 2, SELL, 101, 5), limit(2, 1, SELL, 101, 5), limit(3, 2, SELL, 102, 50))
    before = book_state(book)
    assert play(book, limit(4, 1, BUY, 102, 6, FOK, stp_mode=mode))[1] == (
        "#8 EXPIRED order_id=4 user_id=1 quantity_lots_filled=0 notional_tl_filled=0 reason=FOK_NOT_FILLABLE"
    )
    assert book_state(book) == before
    assert play(book, limit(5, 1, BUY, 102, 5, FOK, stp_mode=mode))[-2] == (
        "#12 FILLED order_id=5 user_id=1 quantity_lots_filled=5 notional_tl_filled=505"
    )


def test_fok_stp_none_counts_own_orders():
    """FOK with NONE counts (and trades with) the user's own orders."""
    book = own_then_other()
    lines = play(book, limit(3, 1, BUY, 101, 10, FOK, stp_mode="NONE"))
    assert lines[-2] == "#10 FILLED order_id=3 user_id=1 quantity_lots_filled=10 notional_tl_filled=1010"
