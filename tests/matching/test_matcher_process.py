"""The matcher process: sweeps under traffic, poisoned commands, the collector."""

from __future__ import annotations

import gc
from datetime import timedelta
from decimal import Decimal as D

import pytest

from orders.models import Order
from tests.matching.conftest import drain, place
from tests.matching.test_matcher import assert_sound


def _lose_entry(matcher, order) -> None:
    """Delete the stream entry of ``order`` (an XADD that never happened) and
    make the order older than the sweep's grace period."""
    for entry_id, fields in matcher.redis.xrange(matcher.stream):
        if fields[b"c"] == b"new" and int(fields[b"id"]) == order.pk:
            matcher.redis.xdel(matcher.stream, entry_id)
            break
    else:  # pragma: no cover - placement enqueues on commit
        raise AssertionError("the order's entry was never added")
    Order.objects.filter(pk=order.pk).update(created_at=order.created_at - timedelta(seconds=60))


def test_sweep_runs_under_steady_traffic(traders, matcher):
    """A command whose stream entry was lost is applied while other commands keep
    arriving: the sweep runs on a timer, not only when the stream is idle."""
    alice, bob, _ = traders
    matcher.run_once()  # the pending list: nothing
    lost = place(alice, "SELL", price=100, quantity=1)
    _lose_entry(matcher, lost)
    matcher._last_sweep = 0.0  # the timer is due
    for index in range(5):  # every read returns entries: the stream is never idle
        place(bob, "BUY", price=50 + index, quantity=1)
        assert matcher.run_once() == 1

    lost.refresh_from_db()
    assert lost.status == "NEW"
    assert_sound(matcher)


def test_a_matcher_behind_its_stream_does_not_take_what_waits_there_for_lost(traders, matcher):
    """While each read fills a batch (commands older than the grace period still wait in the
    stream), the sweep does not pull them from the database out of stream order; they are
    applied from the stream, in its order, and the sweep resumes once the stream is read out."""
    alice, bob, _ = traders
    matcher.run_once()  # the pending list: nothing
    matcher.batch_size = 2
    orders = [place(alice if index % 2 else bob, "BUY", price=50 + index, quantity=1) for index in range(5)]
    Order.objects.filter(pk__in=[order.pk for order in orders]).update(
        created_at=orders[0].created_at - timedelta(seconds=60))  # all older than the grace period
    matcher._last_sweep = 0.0  # the timer is due
    applied = []
    for _ in range(3):
        matcher.run_once()
        matcher.land()  # the batch read is committed
        applied.append(sorted(Order.objects.filter(pk__in=[o.pk for o in orders], status="NEW")
                              .values_list("pk", flat=True)))
    ids = [order.pk for order in orders]
    assert applied == [ids[:2], ids[:4], ids]  # two a read, from the stream, nothing swept ahead
    assert matcher._caught_up
    assert_sound(matcher)


def test_run_freezes_what_recovery_built(market, redis_app):
    """After recovery the book is moved out of the collector's generations."""
    from matching.worker.matcher import Matcher

    seen = {}
    matcher = Matcher(market.symbol, block_ms=1)
    try:
        matcher.run(lambda: True, on_ready=lambda: seen.setdefault("frozen", gc.get_freeze_count()))
    finally:
        gc.unfreeze()
    assert seen["frozen"] > 0


# ------------------------------------------------------------ poisoned commands


def _poison(order) -> None:
    """Make the order's row unprocessable: a price off the market's tick grid
    makes every attempt to apply it raise (NotAMultiple), like a rounding the
    engine can never take."""
    Order.objects.filter(pk=order.pk).update(price=D("100.005"))


def test_a_poisoned_order_is_set_aside_and_the_market_keeps_trading(traders, matcher):
    from exchange.outbox.models import OutboxEvent
    from risk.models import RiskAlert
    from tests.matching.test_matcher import balance

    alice, bob, carol = traders
    free_before = balance(alice, "BTC")
    bad = place(alice, "SELL", price=100, quantity=1)
    good_sell = place(carol, "SELL", price=101, quantity=1)
    good_buy = place(bob, "BUY", price=101, quantity=D("0.5"))
    _poison(bad)

    drain(matcher)  # before the fix: raised, and every restart failed the same way

    bad.refresh_from_db()
    good_sell.refresh_from_db()
    good_buy.refresh_from_db()
    assert (bad.status, bad.status_reason) == ("REJECTED", "UNPROCESSABLE")
    assert (good_sell.status, good_buy.status) == ("PARTIALLY_FILLED", "FILLED")
    assert balance(alice, "BTC") == free_before  # the hold is released: all available again
    alert = RiskAlert.objects.get(kind="SET_ASIDE", user=alice, market=matcher.market)
    assert alert.severity == "HIGH" and alert.evidence[0]["row_id"] == bad.pk
    assert "NotAMultiple" in alert.evidence[0]["error"]
    assert OutboxEvent.objects.filter(event_type="order.updated", payload__order_id=bad.pk,
                                      payload__status="REJECTED").count() == 1
    # Still trading: a later order matches.
    later = place(alice, "SELL", price=101, quantity=D("0.5"))
    drain(matcher)
    later.refresh_from_db()
    assert later.status == "NEW"
    assert_sound(matcher)


def test_a_poisoned_order_in_the_backlog_does_not_stop_recovery(traders, market, redis_app, settings):
    """The restart path: the command fails during recovery (before ready), so a
    supervisor could only back off for ever; it is set aside instead."""
    from matching.worker.matcher import Matcher

    settings.ORDERS_REQUIRE_LIVE_MATCHER = False  # orders queue while no matcher runs
    alice, bob, _ = traders
    bad = place(alice, "BUY", price=100, quantity=1)
    good = place(bob, "SELL", price=99, quantity=1)
    _poison(bad)
    matcher = Matcher(market.symbol, batch_size=500, block_ms=1)
    matcher.start()
    try:
        bad.refresh_from_db()
        good.refresh_from_db()
        assert (bad.status, good.status) == ("REJECTED", "NEW")
        drain(matcher)
        assert_sound(matcher)
    finally:
        matcher.stop()


def test_a_transient_failure_is_never_set_aside(traders, matcher, monkeypatch):
    """A database error says nothing about the command: the batch fails (the
    run loop retries it), the order is not rejected."""
    from django.db import OperationalError

    from matching.worker import batch as batch_module

    alice, _, _ = traders
    order = place(alice, "SELL", price=100, quantity=1)
    calls = {"n": 0}
    real = batch_module.BatchApplier.write

    def flaky(self, plan):
        calls["n"] += 1
        if calls["n"] <= 3:
            raise OperationalError("server closed the connection unexpectedly")
        return real(self, plan)

    monkeypatch.setattr(batch_module.BatchApplier, "write", flaky)
    matcher.run_once()  # the pending list: empty
    for _ in range(3):
        with pytest.raises(OperationalError):
            matcher.run_once()  # the batch is handed to the writer
            matcher.land()  # its failure surfaces when it lands
    drain(matcher)
    order.refresh_from_db()
    assert order.status == "NEW"
    assert_sound(matcher)


def test_a_poisoned_amendment_is_rejected_and_the_hold_trued_up(traders, matcher):
    from orders.models import OrderAmendment
    from orders.services import order_amend
    from risk.models import RiskAlert
    from tests.matching.test_matcher import balance

    alice, _, _ = traders
    order = place(alice, "BUY", price=100, quantity=1)
    drain(matcher)
    held_resting = balance(alice, "USDT")[1]
    order_amend(user=alice, order_id=order.pk, price=D(120), quantity=D(1))  # tops the hold up first
    assert balance(alice, "USDT")[1] > held_resting
    OrderAmendment.objects.filter(order=order).update(new_price=D("120.005"))  # unprocessable

    drain(matcher)

    amendment = OrderAmendment.objects.get(order=order)
    order.refresh_from_db()
    assert (amendment.status, amendment.reject_reason) == ("REJECTED", "UNPROCESSABLE")
    assert (order.status, order.price) == ("NEW", D(100))
    assert balance(alice, "USDT")[1] == held_resting  # back to what the resting order needs
    assert RiskAlert.objects.filter(kind="SET_ASIDE", user=alice).exists()
    assert_sound(matcher)


def test_many_failing_commands_stop_the_matcher_instead_of_rejecting_them_all(traders, matcher, monkeypatch):
    """A failure on every command is a bad matcher, not bad commands: after a
    few set-asides the error propagates and nothing more is rejected."""
    from matching.worker import poison

    monkeypatch.setattr(poison, "MAX_SET_ASIDE_PER_MINUTE", 2)
    alice, bob, carol = traders
    orders = [place(user, "SELL", price=100 + index, quantity=1) for index, user in enumerate((alice, bob, carol))]
    for order in orders:
        _poison(order)
    matcher.run_once()  # the pending list: empty
    with pytest.raises(Exception, match="not a multiple"):
        matcher.run_once()
    statuses = sorted(Order.objects.filter(pk__in=[o.pk for o in orders]).values_list("status", flat=True))
    assert statuses == ["PENDING", "REJECTED", "REJECTED"]


def test_the_limit_holds_across_restarts(traders, matcher, monkeypatch):
    """A new incarnation counts the orders its predecessors set aside."""
    from matching.worker import poison

    monkeypatch.setattr(poison, "MAX_REJECTED_PER_10_MINUTES", 1)
    alice, bob, _ = traders
    first = place(alice, "SELL", price=100, quantity=1)
    _poison(first)
    matcher.run_once()
    matcher.run_once()  # sets ``first`` aside
    first.refresh_from_db()
    assert first.status == "REJECTED"
    second = place(bob, "SELL", price=101, quantity=1)
    _poison(second)
    matcher._set_aside_at.clear()  # as a restarted process
    with pytest.raises(Exception, match="not a multiple"):
        drain(matcher)
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("REJECTED", "PENDING")
