"""Failure modes of the batch path found in review (issue 13), each proven through a real matcher."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal as D

from django.utils import timezone

from matching import stream
from matching.models import MarketState
from matching.services import market_status_request
from orders.models import Candle, Order, Trade
from tests.matching.conftest import drain, place
from tests.matching.test_matcher import assert_sound, balance


def stored_sequence(matcher) -> int:
    return MarketState.objects.get(market=matcher.market).last_sequence


def test_cancels_refused_while_halted_keep_the_stored_sequence_with_the_engine(traders, matcher):
    """Cancels queued behind a halt are refused by the engine (MARKET_HALTED), which takes a
    sequence for each and changes no row. The stored sequence must still follow the engine's:
    before the fix it stayed behind, and the next batch that wrote anything (here the resume)
    failed its fence for ever, so the market could never trade again."""
    alice, bob, _ = traders
    orders = [place(alice, "SELL", price=100 + n, quantity=1) for n in range(3)]
    drain(matcher)
    market_status_request(market=matcher.market, new_status="HALTED", actor=None, reason="incident")
    drain(matcher)
    # Cancels accepted just before the halt whose stream entries arrive after it (a market
    # maker's cancel-all during an incident): their batch has only refused cancels.
    Order.objects.filter(pk__in=[o.pk for o in orders]).update(cancel_requested_at=timezone.now())
    for order in orders:
        matcher.redis.xadd(matcher.stream, stream.command_fields(stream.CANCEL, order.pk))
    drain(matcher)

    matcher.market.refresh_from_db()
    assert matcher.market.status == "HALTED"
    assert stored_sequence(matcher) == matcher.book.sequence
    assert set(Order.objects.filter(pk__in=[o.pk for o in orders]).values_list("status", flat=True)) == {"NEW"}

    market_status_request(market=matcher.market, new_status="TRADING", actor=None, reason="resolved")
    drain(matcher)
    matcher.market.refresh_from_db()
    assert matcher.market.status == "TRADING"
    place(bob, "BUY", price=100, quantity=1)
    drain(matcher)
    assert Trade.objects.count() == 1
    assert stored_sequence(matcher) == matcher.book.sequence
    assert_sound(matcher)


def test_trades_carry_the_time_the_batch_executes_them(traders, matcher):
    """Orders accepted two hours ago and applied only now (after a recovery, or by the sweep)
    trade now: before the fix the trade took its command's time, was backdated by two hours
    and rewrote a candle two hours in the past."""
    alice, bob, _ = traders
    sell = place(alice, "SELL", price=100, quantity=1)
    buy = place(bob, "BUY", price=100, quantity=1)
    long_ago = timezone.now() - timedelta(hours=2)
    Order.objects.filter(pk__in=[sell.pk, buy.pk]).update(created_at=long_ago)
    before = timezone.now()

    drain(matcher)

    trade = Trade.objects.get()
    assert before <= trade.executed_at <= timezone.now()
    candle = Candle.objects.get()
    assert candle.opened_at == trade.executed_at.replace(second=0, microsecond=0)
    assert_sound(matcher)


def test_a_cancel_entry_without_a_cancel_request_is_not_applied(traders, matcher):
    """A stream ``cancel`` entry is only a pointer: the request is the row's
    ``cancel_requested_at``. Before the fix an entry for an order nobody asked to cancel
    (a stray or forged XADD) cancelled it anyway: resting, or still PENDING."""
    alice, _, _ = traders
    resting = place(alice, "SELL", price=100, quantity=1)
    drain(matcher)
    pending = place(alice, "SELL", price=101, quantity=1)
    matcher.redis.delete(matcher.stream)
    matcher.redis.xgroup_create(matcher.stream, stream.GROUP, id="0", mkstream=True)
    matcher.redis.xadd(matcher.stream, stream.command_fields(stream.CANCEL, resting.pk))
    matcher.redis.xadd(matcher.stream, stream.command_fields(stream.CANCEL, pending.pk))
    matcher.redis.xadd(matcher.stream, stream.command_fields(stream.NEW, pending.pk))

    drain(matcher)

    for order in (resting, pending):
        order.refresh_from_db()
        assert (order.status, order.cancel_requested_at) == ("NEW", None)
        assert order.pk in matcher.book
    assert balance(alice, "BTC")[1] == D(2)
    assert_sound(matcher)


def test_check_ledger_proves_each_batch_equals_the_sum_over_its_trades(traders, matcher):
    """The matcher posts one netted MATCH transaction per batch; ``batch_matches_trades``
    recomputes what its trades moved per (user, asset) and for the fees. A batch that moves
    anything else (here a made-up one whose sequence range claims the trades but which
    moves one unit between two users) is reported."""
    from wallet.invariants import ledger_violations
    from wallet.models import LedgerTransaction
    from wallet.services import BatchSettlement, batch_settle

    alice, bob, _ = traders
    place(alice, "SELL", price=100, quantity=1)
    place(bob, "BUY", price=100, quantity="0.4")
    place(bob, "BUY", price=100, quantity="0.6")
    drain(matcher)
    assert Trade.objects.count() == 2
    batch = LedgerTransaction.objects.get(kind="MATCH")
    assert batch.reference.startswith(f"match:{matcher.market.symbol}:")
    assert ledger_violations() == []

    market = matcher.market
    unit = D("0.00000001")
    batch_settle(settlement=BatchSettlement(
        reference=f"match:{market.symbol}:0:{matcher.book.sequence}",
        legs={(alice.pk, market.quote_id, "AVAILABLE", None): -unit, (bob.pk, market.quote_id, "AVAILABLE", None): unit},
    ))
    checks = {violation.check for violation in ledger_violations()}
    assert checks == {"batch_matches_trades"}
