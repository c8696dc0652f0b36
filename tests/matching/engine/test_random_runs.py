"""Seeded random command streams through the engine, the reference and the mirror."""

import pytest

from .harness import Harness
from .random_commands import RandomCommands


def run_stream(seed, count, stp_default="EXPIRE_TAKER", replica_every=500, deep=False):
    harness = Harness(stp_default)
    commands = RandomCommands(seed, deep)
    for i in range(count):
        if i % replica_every == replica_every // 2:
            harness.restart_replica()
        harness.apply(commands(harness.book))
    return harness


@pytest.mark.parametrize("seed", range(12))
def test_random_stream_agrees_with_reference_and_keeps_invariants(seed):
    """3,000 random commands per seed (every command kind, invalid input,
    foreign users, stale ids, status changes): after every command the book's
    invariants hold, its events equal the naive reference's, the event mirror
    finds no overfill, no trade off the maker's price or out of priority, no
    lost quantity, and a replica restored from a snapshot emits the same
    events from then on. Odd seeds grow deep books (see RandomCommands)."""
    stp_default = ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH", "NONE"][seed % 4]
    harness = run_stream(seed, 3000, stp_default, deep=seed % 2 == 1)
    states = {order["state"] for order in harness.mirror.orders.values()}
    assert {"FILLED", "CANCELED", "EXPIRED"} <= states
    assert harness.book.sequence == harness.mirror.sequence


def test_random_streams_cover_every_event_kind():
    """The random streams are worth something only if they reach every event
    kind and every expiry reason; this proves they do (over two seeds)."""
    seen_kinds, seen_reasons = set(), set()
    for seed in (100, 101):
        harness = Harness()
        commands = RandomCommands(seed)
        for _ in range(2000):
            for event in harness.apply(commands(harness.book)):
                seen_kinds.add(event.kind)
                if event.kind in ("EXPIRED", "REJECTED", "AMEND_REJECTED", "CANCEL_REJECTED"):
                    seen_reasons.add(event.reason)
    assert seen_kinds == {
        "ACCEPTED", "REJECTED", "CANCEL_REJECTED", "AMEND_REJECTED", "TRADE", "PARTIALLY_FILLED",
        "FILLED", "CANCELED", "EXPIRED", "TRIGGERED", "AMENDED", "BOOK_DELTA",
        "MARKET_STATUS_CHANGED", "MARKET_STATUS_REJECTED",
    }
    assert {
        "IOC_REMAINDER", "FOK_NOT_FILLABLE", "NO_LIQUIDITY", "QUOTE_LIMIT_REACHED",
        "SELF_TRADE_PREVENTION", "POST_ONLY_WOULD_TAKE", "WOULD_TRIGGER_IMMEDIATELY",
        "DUPLICATE_ORDER_ID", "UNKNOWN_ORDER", "MARKET_HALTED", "MARKET_CANCEL_ONLY", "MARKET_POST_ONLY",
        "QUANTITY_NOT_ABOVE_FILLED", "AMEND_NOT_SUPPORTED",
    } <= seen_reasons
