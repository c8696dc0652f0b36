"""Book snapshots on disk: recovery from a snapshot brought up to date equals a
rebuild from the database; a missing, corrupt, foreign, stale or wrong
snapshot falls back to the rebuild."""

from __future__ import annotations

import time
from decimal import Decimal as D

import pytest

from matching.worker import snapshot
from matching.worker.matcher import Matcher
from matching.worker.rebuild import database_snapshot
from orders.models import Order
from orders.services import order_amend, order_cancel
from tests.matching.conftest import drain, place
from tests.matching.test_matcher import assert_sound


@pytest.fixture
def snapshot_dir(settings, tmp_path):
    settings.MATCHER_SNAPSHOT_DIR = str(tmp_path)
    return tmp_path


def _book_rows(traders):
    """Resting orders on both sides at a few levels, and an untriggered stop."""
    alice, bob, carol = traders
    orders = {}
    for index, price in enumerate((99, 99, 98, 97)):
        orders[f"bid{index}"] = place(alice if index % 2 else bob, "BUY", price=price, quantity=2)
    for index, price in enumerate((101, 101, 102, 103)):
        orders[f"ask{index}"] = place(carol if index % 2 else alice, "SELL", price=price, quantity=2)
    orders["stop"] = place(bob, "SELL", "STOP_LOSS", stop_price=95, quantity=1)
    return orders


def _write(matcher) -> None:
    snapshot.write_snapshot(matcher.book, identity=snapshot.market_identity(matcher.market),
                            path=snapshot.path_for(matcher.symbol))


def _reasons(caplog) -> str:
    return " | ".join(str(getattr(record, "reason", "")) for record in caplog.records)


def _loaded(matcher):
    book, source = snapshot.load_book(matcher.market)
    return book, source


def test_a_snapshot_brought_up_to_date_equals_the_rebuild(snapshot_dir, traders, matcher):
    alice, bob, carol = traders
    orders = _book_rows(traders)
    drain(matcher)
    _write(matcher)
    taken_at = matcher.book.sequence

    # After the snapshot: a maker partly filled (keeps its place), one filled,
    # one cancelled, one amended down (keeps its place), one amended to a new
    # price (loses it), new orders at the back of existing levels and on new
    # levels, a stop placed.
    place(carol, "SELL", price=99, quantity=3)  # fills bid0 (2), 1 of bid1
    order_cancel(user=carol, order_id=orders["ask1"].pk)
    order_amend(user=alice, order_id=orders["ask2"].pk, price=D(102), quantity=D(1))
    order_amend(user=alice, order_id=orders["ask0"].pk, price=D(102), quantity=D(2))
    place(bob, "BUY", price=98, quantity=1)
    place(alice, "BUY", price=96, quantity=1)
    place(carol, "SELL", price=101, quantity=1)
    place(carol, "BUY", "STOP_LOSS_LIMIT", price=110, stop_price=105, quantity=1)
    drain(matcher)
    assert matcher.book.sequence > taken_at

    book, source = _loaded(matcher)
    assert source == "snapshot"
    assert book.snapshot() == database_snapshot(matcher.market) == matcher.book.snapshot()
    assert_sound(matcher)


def test_an_exact_snapshot_is_used_as_is(snapshot_dir, traders, matcher):
    _book_rows(traders)
    drain(matcher)
    _write(matcher)
    book, source = _loaded(matcher)
    assert source == "snapshot"
    assert book.snapshot() == database_snapshot(matcher.market)


def test_missing_corrupt_foreign_or_ahead_snapshots_fall_back(snapshot_dir, traders, matcher, caplog):
    _book_rows(traders)
    drain(matcher)
    expected = database_snapshot(matcher.market)
    path = snapshot.path_for(matcher.symbol)

    assert _loaded(matcher)[1] == "database"  # missing

    _write(matcher)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # one flipped bit in the orders
    path.write_bytes(bytes(data))
    book, source = _loaded(matcher)
    assert (source, book.snapshot()) == ("database", expected)
    assert "checksum mismatch" in _reasons(caplog)

    path.write_bytes(b"garbage")
    assert _loaded(matcher)[1] == "database"

    snapshot.write_file(path, snapshot.encode(
        matcher.book.snapshot(), identity=dict(snapshot.market_identity(matcher.market), market_id=0)))
    assert _loaded(matcher)[1] == "database"  # another market's (or another database's) file
    assert "another market" in _reasons(caplog)

    # A snapshot ahead of the database (the database restored from a backup
    # taken before the snapshot was written).
    ahead = matcher.book.snapshot()
    ahead["sequence"] += 5
    snapshot.write_file(path, snapshot.encode(ahead, identity=snapshot.market_identity(matcher.market)))
    book, source = _loaded(matcher)
    assert (source, book.snapshot()) == ("database", expected)
    assert "ahead of the database" in _reasons(caplog)


def test_a_snapshot_that_disagrees_with_the_database_falls_back(snapshot_dir, traders, matcher, caplog):
    """An order closed behind the engine's back (no event, no sequence): the
    check against the database refuses the snapshot."""
    orders = _book_rows(traders)
    drain(matcher)
    _write(matcher)
    Order.objects.filter(pk=orders["bid2"].pk).update(status="CANCELED")
    book, source = _loaded(matcher)
    assert source == "database"
    assert book.open_order(orders["bid2"].pk) is None
    assert "does not match the database" in _reasons(caplog)


def test_the_matcher_writes_snapshots_in_a_child_and_recovers_from_them(snapshot_dir, traders, market, redis_app,
                                                                        settings):
    settings.MATCHER_SNAPSHOT_EVERY_S = 0.01
    first = Matcher(market.symbol, batch_size=500, block_ms=1)
    first.start()
    try:
        _book_rows(traders)
        drain(first)
        time.sleep(0.02)
        first.run_once()  # the timer is due: a child writes the snapshot
        first.snapshots.close()
        assert first.snapshots.written >= 1
        assert snapshot.path_for(market.symbol).exists()
        place(traders[0], "BUY", price=99, quantity=1)  # after the snapshot
        drain(first)
    finally:
        first.stop()
    settings.ORDERS_REQUIRE_LIVE_MATCHER = False
    late = place(traders[2], "SELL", price=99, quantity=1)  # queued while no matcher runs
    second = Matcher(market.symbol, batch_size=500, block_ms=1)
    second.start()
    try:
        assert second.book_source == "snapshot"
        late.refresh_from_db()
        assert late.status == "FILLED"
        assert_sound(second)
    finally:
        second.stop()


@pytest.mark.parametrize("seed", [1, 2])
def test_random_trading_after_a_snapshot_still_equals_the_rebuild(snapshot_dir, traders, matcher, seed):
    """Random limit orders, stops, cancels and amendments after a snapshot: the
    snapshot brought up to date is the database's book, round after round."""
    import random

    from exchange.core.errors import ApplicationError
    from orders.models import RESTING_STATUSES

    rng = random.Random(seed)

    def round_of(count: int) -> None:
        for _ in range(count):
            user = rng.choice(traders)
            roll = rng.random()
            try:
                if roll < 0.6:
                    place(user, rng.choice(["BUY", "SELL"]), price=100 + rng.randint(-5, 5),
                          quantity=D(rng.randint(1, 30)) / 10)
                elif roll < 0.67:
                    side = rng.choice(["BUY", "SELL"])
                    place(user, side, "STOP_LOSS", stop_price=103 if side == "BUY" else 97, quantity=D(1))
                elif roll < 0.85:
                    ids = list(Order.objects.filter(user=user, status__in=RESTING_STATUSES).values_list("id", flat=True))
                    if ids:
                        order_cancel(user=user, order_id=rng.choice(ids))
                else:
                    resting = list(Order.objects.filter(user=user, status__in=RESTING_STATUSES, type="LIMIT"))
                    if resting:
                        order = rng.choice(resting)
                        keep_price = rng.random() < 0.5
                        order_amend(user=user, order_id=order.pk,
                                    price=order.price if keep_price else order.price + rng.choice([-1, 1]),
                                    quantity=order.filled_quantity + D(rng.randint(1, 20)) / 10)
            except ApplicationError:
                pass
            if rng.random() < 0.2:
                drain(matcher)
        drain(matcher)

    round_of(60)
    _write(matcher)
    for _ in range(2):
        round_of(60)
        book, source = _loaded(matcher)
        assert source == "snapshot"
        assert book.snapshot() == database_snapshot(matcher.market) == matcher.book.snapshot()
    assert_sound(matcher)
