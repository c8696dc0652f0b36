"""Snapshot and restore: format, identical future behaviour, rebuilding from rows."""

import copy
import json

import pytest

from matching.engine import (
    BUY,
    SELL,
    STOP_LOSS,
    InvariantError,
    OrderBook,
)

from .golden import given, limit, market, play, stop
from .harness import as_tuple
from .random_commands import RandomCommands


def busy_book(seed=7, count=600):
    """A book with resting orders on both sides, partial fills and stops."""
    book = OrderBook("BTC-USDT", stp_default="EXPIRE_MAKER")
    commands = RandomCommands(seed, deep=True)
    for _ in range(count):
        book.apply(commands(book))
    snapshot = book.snapshot()
    assert snapshot["bids"] and snapshot["asks"] and snapshot["stops"]
    assert any(row[4] for row in snapshot["bids"] + snapshot["asks"]), "no partially filled order"
    return book, commands


def assert_plain_json(value):
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            assert_plain_json(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain_json(item)
    else:
        assert type(value) in (int, str), f"{value!r} is not an int or a str"


def test_snapshot_holds_only_ints_strings_and_lists():
    """A snapshot of a busy book (resting orders, partial fills, untriggered
    stops) is made of ints, strings, lists and the top-level dict only: no
    None, no float, no bool; it survives a JSON round trip unchanged."""
    book, _ = busy_book()
    snapshot = book.snapshot()
    assert snapshot["bids"] and snapshot["asks"] and snapshot["stops"]
    assert_plain_json(snapshot)
    assert json.loads(json.dumps(snapshot)) == snapshot


def test_restore_then_same_commands_give_identical_events():
    """snapshot -> JSON -> restore, then 2,000 more random commands applied
    to the original and to the restored book: identical events (kinds,
    sequences, every field) and identical final snapshots."""
    book, commands = busy_book()
    restored = OrderBook.restore(json.loads(json.dumps(book.snapshot())))
    assert restored.snapshot() == book.snapshot()
    for _ in range(2000):
        command = commands(book)
        assert [as_tuple(e) for e in restored.apply(command)] == [as_tuple(e) for e in book.apply(command)]
    restored.check_invariants()
    assert restored.snapshot() == book.snapshot()


def rows_snapshot():
    """A snapshot as the worker builds it from database rows on restart:
    open orders best price first and in priority order (the sequence of
    their last ACCEPTED/TRIGGERED/priority-losing AMENDED), untriggered
    stops by accepted sequence, the market's last sequence and last price."""
    return {
        "format": "matching.engine.book/1",
        "symbol": "BTC-USDT",
        "sequence": 5000,
        "status": "TRADING",
        "stp_default": "EXPIRE_TAKER",
        "last_trade_price_ticks": 100,
        "order_columns": [
            "order_id", "user_id", "price_ticks", "quantity_lots_remaining",
            "quantity_lots_filled", "notional_tl_filled", "order_type", "stp_mode",
        ],
        "bids": [
            [11, 1, 99, 3, 2, 198, "LIMIT", "EXPIRE_TAKER"],
            [12, 2, 99, 4, 0, 0, "LIMIT_MAKER", "NONE"],
            [13, 3, 97, 10, 0, 0, "LIMIT", "EXPIRE_TAKER"],
        ],
        "asks": [
            [21, 4, 101, 5, 0, 0, "LIMIT", "EXPIRE_TAKER"],
        ],
        "stop_columns": [
            "order_id", "user_id", "side", "order_type", "time_in_force", "price_ticks",
            "stop_price_ticks", "quantity_lots", "quote_limit_tl", "stp_mode", "accepted_sequence",
        ],
        "stops": [
            [31, 5, "SELL", "STOP_LOSS", "", 0, 98, 4, 0, "EXPIRE_TAKER", 4990],
            [32, 6, "BUY", "TAKE_PROFIT_LIMIT", "IOC", 101, 97, 2, 0, "EXPIRE_TAKER", 4995],
        ],
    }


def test_book_built_from_database_rows_behaves_as_described():
    """A snapshot written by hand, as the worker would from its tables,
    restores to a book whose depth, priority and stops are as described:
    a sell of 6 at 99 meets order 11 then 12 (FIFO), trades at 99 and
    triggers the SELL STOP_LOSS at 98 only when the price reaches it; the
    next sequence follows the snapshot's."""
    book = OrderBook.restore(rows_snapshot())
    assert book.depth() == ([(99, 7), (97, 10)], [(101, 5)])
    assert (book.best_bid(), book.best_ask(), book.sequence, book.last_trade_price_ticks) == (99, 101, 5000, 100)
    assert play(book, limit(41, 7, SELL, 99, 6)) == [
        "#5001 ACCEPTED order_id=41 user_id=7 side=SELL order_type=LIMIT time_in_force=GTC price_ticks=99 quantity_lots=6 stp_mode=EXPIRE_TAKER status=NEW",
        "#5002 TRADE price_ticks=99 quantity_lots=3 maker_order_id=11 maker_user_id=1 taker_order_id=41 taker_user_id=7 taker_side=SELL",
        "#5003 FILLED order_id=11 user_id=1 quantity_lots_filled=5 notional_tl_filled=495",
        "#5004 TRADE price_ticks=99 quantity_lots=3 maker_order_id=12 maker_user_id=2 taker_order_id=41 taker_user_id=7 taker_side=SELL",
        "#5005 PARTIALLY_FILLED order_id=12 user_id=2 quantity_lots_filled=3 notional_tl_filled=297 quantity_lots_remaining=1",
        "#5006 FILLED order_id=41 user_id=7 quantity_lots_filled=6 notional_tl_filled=594",
        "#5007 BOOK_DELTA side=BUY price_ticks=99 quantity_lots=1",
    ]
    # 1 lot at 99 then 1 at 97: the trade at 97 triggers the SELL STOP_LOSS
    # at 98 (accepted first, sells 4 at 97) and the BUY TAKE_PROFIT_LIMIT at
    # 97 (accepted second, an IOC buy at up to 101 that takes 2 at 101).
    lines = play(book, market(42, 8, SELL, quantity_lots=2))
    assert [line.split()[1] for line in lines] == [
        "ACCEPTED", "TRADE", "FILLED", "TRADE", "PARTIALLY_FILLED", "FILLED",
        "TRIGGERED", "TRADE", "PARTIALLY_FILLED", "FILLED",
        "TRIGGERED", "TRADE", "PARTIALLY_FILLED", "FILLED",
        "BOOK_DELTA", "BOOK_DELTA", "BOOK_DELTA",
    ]
    assert lines[6] == "#5014 TRIGGERED order_id=31 user_id=5 trigger_price_ticks=97"
    assert lines[10] == "#5018 TRIGGERED order_id=32 user_id=6 trigger_price_ticks=97"


def broken(change):
    snapshot = rows_snapshot()
    change(snapshot)
    return snapshot


@pytest.mark.parametrize(
    "snapshot, error",
    [
        (broken(lambda s: s.update(format="matching.engine.book/0")), ValueError),
        (broken(lambda s: s["order_columns"].reverse()), ValueError),
        (broken(lambda s: s["bids"].reverse()), ValueError),  # not best price first
        (broken(lambda s: s["asks"].append([11, 9, 102, 1, 0, 0, "LIMIT", "NONE"])), ValueError),  # id twice
        (broken(lambda s: s["asks"].append([22, 9, 102, 0, 0, 0, "LIMIT", "NONE"])), ValueError),  # nothing open
        (broken(lambda s: s["asks"].append([22, 9, 102, 1, 0, 0, "MARKET", "NONE"])), ValueError),
        (broken(lambda s: s["asks"].append([22, 9, 102, 1, 0, 0, "LIMIT", None])), ValueError),
        (broken(lambda s: s["stops"].reverse()), ValueError),  # not by accepted sequence
        (broken(lambda s: s.update(sequence=4991)), InvariantError),  # stop accepted after the last event
        (broken(lambda s: s["asks"].insert(0, [22, 9, 99, 1, 0, 0, "LIMIT", "NONE"])), InvariantError),  # crossed
        (broken(lambda s: s.update(last_trade_price_ticks=98)), InvariantError),  # stop at 98 should have fired
    ],
)
def test_restore_refuses_a_snapshot_that_is_malformed_or_impossible(snapshot, error):
    """restore() checks what it is given: a malformed snapshot raises
    ValueError, one describing an impossible book (crossed, a stop that
    should have triggered) raises InvariantError."""
    with pytest.raises(error):
        OrderBook.restore(snapshot)


def test_snapshot_does_not_share_state_with_the_book():
    """Changing a snapshot after taking it does not change the book."""
    book, _ = busy_book()
    snapshot = book.snapshot()
    kept = copy.deepcopy(snapshot)
    snapshot["bids"].clear()
    snapshot["stops"][0][6] = 1
    assert book.snapshot() == kept


def test_stop_trigger_order_survives_restore():
    """Two stops that trigger together run in accepted order after a
    restore too (the accepted sequence is part of the snapshot)."""
    book = OrderBook("BTC-USDT")
    given(
        book,
        limit(1, 10, SELL, 100, 1), limit(2, 11, BUY, 100, 1),
        limit(3, 20, BUY, 95, 1), limit(4, 21, BUY, 94, 10),
        stop(6, 31, SELL, STOP_LOSS, 98, 1), stop(5, 30, SELL, STOP_LOSS, 96, 1),
    )
    restored = OrderBook.restore(book.snapshot())
    command = market(7, 40, SELL, quantity_lots=1)
    expected = play(book, command)
    assert play(restored, command) == expected
    assert [line for line in expected if "TRIGGERED" in line] == [
        "#18 TRIGGERED order_id=6 user_id=31 trigger_price_ticks=95",
        "#22 TRIGGERED order_id=5 user_id=30 trigger_price_ticks=95",
    ]

