"""The matcher process: sweeps under traffic, poisoned commands, the collector."""

from __future__ import annotations

import gc
from datetime import timedelta

from matching import stream
from orders.models import Order
from tests.matching.conftest import place
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
