"""The matcher applies engine events to PostgreSQL and the ledger, exactly once."""

from __future__ import annotations

import threading
import time
from decimal import Decimal as D

import pytest
from django.db import OperationalError, connection

from exchange.core.errors import ApplicationError
from matching import stream
from matching.models import MarketState, MarketStatusChange
from matching.services import market_status_request
from matching.worker import batch as batch_module
from matching.worker.batch import SequenceConflict
from matching.worker.matcher import Matcher, MatcherAlreadyRunning, database_backlog
from matching.worker.rebuild import database_snapshot
from orders.models import Candle, Order, Trade
from orders.services import order_amend, order_cancel, orders_cancel_all
from tests.matching.conftest import drain, place
from wallet.invariants import ledger_violations
from wallet.models import Account
from wallet.selectors import balances_for_user


def balance(user, code: str) -> tuple[D, D]:
    """(available, held) of ``user`` in ``code``."""
    for row in balances_for_user(user=user):
        if row.asset == code:
            return row.available, row.held
    return D(0), D(0)


def fees(code: str) -> D:
    account = Account.objects.filter(user__isnull=True, asset__code=code, kind="FEES").first()
    return account.balance if account else D(0)


def assert_sound(matcher: Matcher | None = None) -> None:
    """No ledger invariant is broken, and (with a matcher) the book rebuilt from
    the database is exactly the book in memory."""
    assert ledger_violations() == []
    if matcher is not None:
        assert database_snapshot(matcher.market) == matcher.book.snapshot()


def test_crossing_orders_trade_settle_with_fees_and_true_up_holds(traders, matcher):
    """A taker buying at 101 against a maker at 100 pays 100: the trade settles
    both sides with their fees, and the taker's resting remainder holds exactly
    price x remaining (the 1 USDT of price improvement goes back)."""
    alice, bob, _ = traders
    maker = place(alice, "SELL", price=100, quantity=1)
    taker = place(bob, "BUY", price=101, quantity="1.5")
    assert taker.status == "PENDING" and balance(bob, "USDT") == (D("999848.5"), D("151.5"))

    drain(matcher)

    maker.refresh_from_db()
    taker.refresh_from_db()
    assert (maker.status, maker.filled_quantity, maker.fee_total) == ("FILLED", D(1), D("0.1"))
    assert (taker.status, taker.filled_quantity, taker.filled_notional, taker.fee_total) == (
        "PARTIALLY_FILLED", D(1), D(100), D("0.002"))
    trade = Trade.objects.get()
    assert (trade.price, trade.quantity, trade.notional, trade.taker_side) == (D(100), D(1), D(100), "BUY")
    assert (trade.maker_order_id, trade.taker_order_id, trade.maker_fee, trade.taker_fee) == (
        maker.pk, taker.pk, D("0.1"), D("0.002"))
    assert balance(alice, "BTC") == (D(99), D(0))
    assert balance(alice, "USDT") == (D("1000099.9"), D(0))
    assert balance(bob, "BTC") == (D("100.998"), D(0))
    assert balance(bob, "USDT") == (D("999849.5"), D("50.5"))
    assert (fees("BTC"), fees("USDT")) == (D("0.002"), D("0.1"))
    state = MarketState.objects.get(market=matcher.market)
    assert (state.last_price, state.last_sequence) == (D(100), matcher.book.sequence)
    candle = Candle.objects.get()
    assert (candle.open, candle.close, candle.volume, candle.trade_count) == (D(100), D(100), D(1), 1)
    assert_sound(matcher)


def test_market_orders_by_quantity_and_by_quote(traders, matcher):
    """A market buy by quote spends at most its amount; a market sell by quantity
    walks the book; unused funds are released when each order ends."""
    alice, bob, carol = traders
    place(alice, "SELL", price=100, quantity=1)
    place(alice, "SELL", price=102, quantity=1)
    by_quote = place(bob, "BUY", "MARKET", quote_quantity=151)
    drain(matcher)
    by_quote.refresh_from_db()
    # 1 BTC at 100, then 0.5 BTC at 102 = 51: 151 exactly.
    assert (by_quote.status, by_quote.filled_quantity, by_quote.filled_notional) == ("FILLED", D("1.5"), D(151))
    assert balance(bob, "USDT") == (D(1000000) - 151, D(0))

    place(carol, "BUY", price=99, quantity=2)
    sell = place(bob, "SELL", "MARKET", quantity=3)
    drain(matcher)
    sell.refresh_from_db()
    assert (sell.status, sell.filled_quantity, sell.status_reason) == ("EXPIRED", D(2), "NO_LIQUIDITY")
    assert balance(bob, "BTC")[1] == D(0), "the unfilled 1 BTC is released"
    assert_sound(matcher)


def test_replayed_and_stale_commands_are_skipped(traders, matcher):
    """Entries for commands already applied (a NEW twice, a cancel of a filled
    order) change nothing: no duplicate trade, no double settlement."""
    alice, bob, _ = traders
    maker = place(alice, "SELL", price=100, quantity=1)
    taker = place(bob, "BUY", price=100, quantity=1)
    drain(matcher)
    before = (balance(alice, "USDT"), balance(bob, "BTC"), matcher.book.sequence)

    for order in (maker, taker):
        matcher.redis.xadd(matcher.stream, stream.command_fields(stream.NEW, order.pk))
        matcher.redis.xadd(matcher.stream, stream.command_fields(stream.CANCEL, order.pk))
    drain(matcher)

    assert Trade.objects.count() == 1
    assert (balance(alice, "USDT"), balance(bob, "BTC"), matcher.book.sequence) == before
    assert_sound(matcher)


@pytest.mark.parametrize("error", [RuntimeError, OperationalError])
def test_a_batch_that_fails_to_commit_is_applied_once_after_rebuilding(traders, matcher, monkeypatch, error):
    """If the ledger write fails mid-batch, nothing of the batch is committed;
    the book is rebuilt from the database, which has the orders still PENDING,
    and they are applied once; the unacknowledged stream entries read again
    are skipped: the end state is as if nothing had failed, with one trade.

    A transient failure (OperationalError: the database away) propagates, and
    the entries are read again at the next read; any other failure may be a
    poisoned command: the batch's commands are applied again one at a time at
    once (matching/worker/poison.py)."""
    alice, bob, _ = traders
    place(alice, "SELL", price=100, quantity=1)
    place(bob, "BUY", price=100, quantity=1)
    real_settle = batch_module.batch_settle
    calls = {"n": 0}

    def failing_once(**kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise error("database went away")
        return real_settle(**kwargs)

    monkeypatch.setattr(batch_module, "batch_settle", failing_once)
    if error is OperationalError:
        with pytest.raises(OperationalError):
            for _ in range(3):  # the first read only drains the (empty) pending list
                matcher.run_once()
        assert calls["n"] == 1 and Trade.objects.count() == 0
        drain(matcher)
        expected_calls = 2  # the failed write, then the re-read batch's
    else:
        for _ in range(3):
            matcher.run_once()
        expected_calls = 3  # the failed write, then each command alone
        assert calls["n"] == expected_calls
    assert Trade.objects.count() == 1

    drain(matcher)

    assert calls["n"] == expected_calls, "the re-read entries were skipped, not settled again"
    assert Trade.objects.count() == 1
    assert set(Order.objects.values_list("status", flat=True)) == {"FILLED"}
    assert_sound(matcher)


def test_lost_stream_is_recovered_from_the_database(traders, matcher):
    """Redis flushed with commands in it: the matcher finds the orders still
    PENDING and the cancels still requested in PostgreSQL."""
    alice, bob, _ = traders
    resting = place(alice, "SELL", price=100, quantity=1)
    drain(matcher)
    order_cancel(user=alice, order_id=resting.pk)
    taker = place(bob, "BUY", price=100, quantity=1)
    matcher.redis.flushdb()

    drain(matcher)

    resting.refresh_from_db()
    taker.refresh_from_db()
    assert (resting.status, taker.status) == ("CANCELED", "NEW")
    assert Trade.objects.count() == 0
    assert_sound(matcher)


def test_sweep_finds_commands_whose_stream_entry_never_arrived(traders, matcher, settings):
    """An order committed while XADD failed is applied by the idle sweep."""
    alice, _, _ = traders
    order = place(alice, "SELL", price=100, quantity=1)
    matcher.redis.delete(matcher.stream)  # the entry is lost; the group goes with it
    matcher.redis.xgroup_create(matcher.stream, stream.GROUP, id="0", mkstream=True)
    Order.objects.filter(pk=order.pk).update(created_at=order.created_at.replace(year=2020))

    drain(matcher)

    order.refresh_from_db()
    assert order.status == "NEW"
    assert_sound(matcher)


def test_cancel_before_the_order_is_sequenced(traders, matcher):
    """A cancel that reaches the matcher with its order still PENDING ends the
    order CANCELED without it ever entering the book, and releases its funds."""
    alice, _, _ = traders
    order = place(alice, "BUY", price=100, quantity=1)
    order_cancel(user=alice, order_id=order.pk)
    matcher.redis.delete(matcher.stream)
    matcher.redis.xgroup_create(matcher.stream, stream.GROUP, id="0", mkstream=True)
    matcher.redis.xadd(matcher.stream, stream.command_fields(stream.CANCEL, order.pk))
    matcher.redis.xadd(matcher.stream, stream.command_fields(stream.NEW, order.pk))

    drain(matcher)

    order.refresh_from_db()
    assert (order.status, order.status_reason, order.accepted_sequence) == ("CANCELED", "CANCEL", None)
    assert order.pk not in matcher.book
    assert balance(alice, "USDT") == (D(1000000), D(0))
    assert_sound(matcher)


def test_cancel_all_cancels_the_users_open_orders_only(traders, matcher):
    alice, bob, _ = traders
    mine = [place(alice, "BUY", price=90 + i, quantity=1) for i in range(3)]
    theirs = place(bob, "BUY", price=95, quantity=1)
    drain(matcher)

    assert orders_cancel_all(user=alice, symbol="BTC-USDT") == 3
    drain(matcher)

    assert {o.status for o in Order.objects.filter(pk__in=[o.pk for o in mine])} == {"CANCELED"}
    theirs.refresh_from_db()
    assert theirs.status == "NEW"
    assert balance(alice, "USDT") == (D(1000000), D(0))
    assert_sound(matcher)


def test_amend_down_keeps_priority_and_releases_funds(traders, matcher):
    """Quantity down keeps the order first in its queue and releases what it no
    longer needs; a price change moves it to the back and holds more funds."""
    alice, bob, carol = traders
    first = place(alice, "BUY", price=100, quantity=2)
    second = place(bob, "BUY", price=100, quantity=1)
    drain(matcher)

    order_amend(user=alice, order_id=first.pk, price=None, quantity=D(1))
    drain(matcher)
    assert balance(alice, "USDT") == (D(999900), D(100))
    place(carol, "SELL", price=100, quantity=1)
    drain(matcher)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("FILLED", "NEW"), "the amended order kept its priority"

    amendment = order_amend(user=bob, order_id=second.pk, price=D(110), quantity=None)
    assert amendment.extra_hold == D(10) and balance(bob, "USDT") == (D(999890), D(110))
    with pytest.raises(ApplicationError) as error:
        order_amend(user=bob, order_id=second.pk, price=D(111), quantity=None)
    assert error.value.code == "AMENDMENT_PENDING"
    drain(matcher)
    second.refresh_from_db()
    amendment.refresh_from_db()
    assert (amendment.status, second.price, second.quantity) == ("APPLIED", D(110), D(1))
    assert (amendment.previous_price, amendment.previous_quantity) == (D(100), D(1))
    assert_sound(matcher)


def test_buy_amended_lower_and_larger_is_funded_even_if_it_fills_at_the_old_price_first(traders, matcher):
    """A buy of 2 at 100 amended to 3 at 90 holds 290 (2 may fill at 100 before
    the amendment applies); it fills 1 at 100 first, then the amendment
    applies and the hold is trued up to 90 x 2 = 180."""
    alice, bob, _ = traders
    order = place(alice, "BUY", price=100, quantity=2)
    drain(matcher)
    amendment = order_amend(user=alice, order_id=order.pk, price=D(90), quantity=D(3))
    assert amendment.extra_hold == D(90)
    sell = place(bob, "SELL", price=100, quantity=1)
    matcher.redis.delete(matcher.stream)
    matcher.redis.xgroup_create(matcher.stream, stream.GROUP, id="0", mkstream=True)
    matcher.redis.xadd(matcher.stream, stream.command_fields(stream.NEW, sell.pk))
    matcher.redis.xadd(matcher.stream, stream.command_fields(stream.AMEND, amendment.pk))

    drain(matcher)

    order.refresh_from_db()
    amendment.refresh_from_db()
    assert amendment.status == "APPLIED"
    assert (order.price, order.quantity, order.filled_quantity) == (D(90), D(3), D(1))
    assert balance(alice, "USDT") == (D(1000000) - D(100) - D(180), D(180))
    assert_sound(matcher)


def test_amend_of_an_order_that_filled_meanwhile_is_rejected_and_releases_the_extra(traders, matcher):
    alice, bob, _ = traders
    order = place(alice, "BUY", price=100, quantity=1)
    drain(matcher)
    amendment = order_amend(user=alice, order_id=order.pk, price=None, quantity=D(2))
    place(bob, "SELL", price=100, quantity=1)
    # The sell is enqueued after the amend but reordered ahead of it here, as a
    # slow network might: the amend finds the order filled.
    matcher.redis.delete(matcher.stream)
    matcher.redis.xgroup_create(matcher.stream, stream.GROUP, id="0", mkstream=True)
    sell = Order.objects.get(user=bob)
    matcher.redis.xadd(matcher.stream, stream.command_fields(stream.NEW, sell.pk))
    matcher.redis.xadd(matcher.stream, stream.command_fields(stream.AMEND, amendment.pk))

    drain(matcher)

    amendment.refresh_from_db()
    assert amendment.status == "REJECTED"
    assert balance(alice, "USDT") == (D(999900), D(0)), "the extra 100 USDT came back with the fill"
    assert_sound(matcher)


def test_stop_order_triggers_on_the_markets_last_trade(traders, matcher):
    alice, bob, carol = traders
    stop = place(carol, "SELL", "STOP_LOSS_LIMIT", stop_price=95, price=94, quantity=1)
    place(bob, "BUY", price=94, quantity=1)
    drain(matcher)
    stop.refresh_from_db()
    assert stop.status == "UNTRIGGERED"

    place(alice, "SELL", price=95, quantity="0.5")
    place(bob, "BUY", price=95, quantity="0.5")  # trades at 95: the stop triggers and sells at 94
    drain(matcher)

    stop.refresh_from_db()
    assert (stop.status, stop.filled_quantity) == ("FILLED", D(1))
    assert stop.triggered_at is not None
    assert list(Trade.objects.order_by("sequence").values_list("price", flat=True)) == [D(95), D(94)]
    assert_sound(matcher)


def test_halt_and_resume_go_through_the_matcher(traders, matcher):
    alice, _, _ = traders
    market = matcher.market
    market_status_request(market=market, new_status="HALTED", actor=None, reason="incident 42")
    drain(matcher)
    market.refresh_from_db()
    assert market.status == "HALTED"
    assert MarketStatusChange.objects.get().status == "APPLIED"
    with pytest.raises(ApplicationError) as error:
        place(alice, "BUY", price=100, quantity=1)
    assert error.value.code == "MARKET_HALTED"

    market_status_request(market=market, new_status="TRADING", actor=None, reason="resolved")
    drain(matcher)
    market.refresh_from_db()
    assert market.status == "TRADING"
    assert place(alice, "BUY", price=100, quantity=1).status == "PENDING"


def test_a_second_matcher_for_the_same_market_refuses_to_start(matcher):
    errors = []

    def start_another():
        try:
            Matcher(matcher.symbol).start()
        except MatcherAlreadyRunning as exc:
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=start_another)
    thread.start()
    thread.join()
    assert len(errors) == 1


def test_a_standby_waiting_for_the_lock_holds_back_no_vacuum(matcher):
    """A standby waits for the market's lock for as long as its matcher runs (days).
    It polls: between polls its session holds no snapshot, so rows updated
    meanwhile can be pruned and vacuumed. Blocked in pg_advisory_lock, its one
    statement held the snapshot of when it began, pinning the database's xmin
    horizon: nothing updated after it could ever be cleaned up."""
    pids, took_over = [], threading.Event()

    def standby():
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                pids.append(cursor.fetchone()[0])
            waiting = Matcher(matcher.symbol)
            waiting.start(lock_wait_s=None)
            took_over.set()
            waiting.stop()
        finally:
            connection.close()

    thread = threading.Thread(target=standby)
    thread.start()
    time.sleep(0.5)  # waiting now
    with connection.cursor() as cursor:
        cursor.execute("SELECT txid_current()")  # a transaction that ends after the standby began to wait
        ended = cursor.fetchone()[0]
        samples = []
        for _ in range(10):
            cursor.execute("SELECT backend_xmin::text::bigint FROM pg_stat_activity WHERE pid = %s", [pids[0]])
            samples.append(cursor.fetchone()[0])
            time.sleep(0.03)
    assert not took_over.is_set()
    assert all(xmin is None or xmin > ended for xmin in samples), samples

    matcher.stop()  # the standby takes over
    thread.join(timeout=10)
    assert took_over.is_set()


def test_a_batch_refuses_to_commit_over_another_writer(traders, matcher):
    """The market's sequence is fenced: if someone else moved it, the batch
    rolls back instead of interleaving two books' events."""
    alice, _, _ = traders
    place(alice, "SELL", price=100, quantity=1)
    MarketState.objects.filter(market=matcher.market).update(last_sequence=999)
    with pytest.raises(SequenceConflict):
        matcher.applier.apply(database_backlog(matcher.market))


def test_a_wait_ended_by_a_burst_takes_the_whole_burst_into_one_batch(traders, matcher):
    """The blocking read returns at the first entry of a pipeline of XADDs: the
    rest of the burst, just behind it, goes into the same batch instead of
    waiting a whole batch (the fills' latency on the WebSocket)."""
    alice, bob, _ = traders
    matcher.sweep_after_s = 3600  # the entries stay in the stream: no sweep takes them from the database
    drain(matcher)
    orders = [place(alice if n % 2 else bob, "BUY", price=90 + n, quantity=1) for n in range(5)]
    burst = matcher.redis.xrange(matcher.stream)[-5:]
    matcher.redis.xdel(matcher.stream, *[entry_id for entry_id, _ in burst])
    matcher.block_ms = 5000
    handled = []
    reader = threading.Thread(target=lambda: handled.append(matcher.run_once()))
    reader.start()
    time.sleep(0.3)  # the reader now waits in XREADGROUP
    pipe = matcher.redis.pipeline(transaction=False)
    for _, fields in burst:
        pipe.xadd(matcher.stream, fields)
    pipe.execute()
    reader.join(timeout=10)
    matcher.block_ms = 1
    matcher.land()

    assert handled == [5]
    assert {order.status for order in Order.objects.filter(pk__in=[o.pk for o in orders])} == {"NEW"}
    assert_sound(matcher)


def test_the_sweep_finds_requested_amendments_of_its_market_only(traders, matcher):
    """An amendment whose stream entry never arrived is in the market's backlog while it is
    requested (not one of another market's order), and applied by the sweep."""
    from orders.models import OrderAmendment
    from tests.factories import AssetFactory, MarketFactory

    alice, _, _ = traders
    order = place(alice, "BUY", price=100, quantity=1)
    drain(matcher)
    amendment = order_amend(user=alice, order_id=order.pk, price=D(95), quantity=None)
    matcher.redis.delete(matcher.stream)  # the entry is lost
    matcher.redis.xgroup_create(matcher.stream, stream.GROUP, id="0", mkstream=True)
    OrderAmendment.objects.filter(pk=amendment.pk).update(created_at=amendment.created_at.replace(year=2020))

    other = MarketFactory(base=AssetFactory(code="ETH", name="Ether"), quote=matcher.market.quote)
    assert (stream.AMEND, amendment.pk) not in [(c.kind, c.row_id) for c in database_backlog(other)]
    assert (stream.AMEND, amendment.pk) in [(c.kind, c.row_id) for c in database_backlog(matcher.market)]

    matcher.sweep_after_s = 0  # the last sweep was the first drain's: sweep now
    drain(matcher)

    amendment.refresh_from_db()
    assert amendment.status == "APPLIED" and Order.objects.get(pk=order.pk).price == D(95)
    assert (stream.AMEND, amendment.pk) not in [(c.kind, c.row_id) for c in database_backlog(matcher.market)]
    assert_sound(matcher)
