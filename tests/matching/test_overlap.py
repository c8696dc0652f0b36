"""The engine runs batch N+1 while batch N commits (matching/worker/matcher.py).

Each test holds the writer thread at the door of batch N's transaction until
the matcher has prepared batch N+1 on top of it, so N+1 reads rows N has
changed but not committed: what the batch in flight decided must count, and
nothing about N may be acknowledged or published before N commits.
"""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal as D

import pytest
from django.db import OperationalError

from exchange.outbox.models import OutboxEvent
from matching import stream
from matching.worker.batch import BatchApplier
from orders.models import OrderAmendment, Trade
from orders.services import order_amend, order_cancel
from tests.matching.conftest import drain, place
from tests.matching.test_matcher import assert_sound, balance


class HeldWriter:
    """Batch writes wait until a later batch has been prepared on top of them."""

    def __init__(self, monkeypatch):
        self.open = threading.Event()
        self.prepared_on_top: list[int] = []  # sequence of the in-flight batch each overlapped preparation saw
        self.fail_next_write = False
        real_prepare, real_write = BatchApplier.prepare, BatchApplier.write
        held = self

        def prepare(self, commands, *, after=None):
            plan = real_prepare(self, commands, after=after)
            if after is not None:
                held.prepared_on_top.append(after.result.sequence)
                held.open.set()
            return plan

        def write(self, plan):
            assert held.open.wait(10), "no batch was prepared on top of this one"
            if held.fail_next_write:
                held.fail_next_write = False
                raise OperationalError("server closed the connection unexpectedly")
            return real_write(self, plan)

        monkeypatch.setattr(BatchApplier, "prepare", prepare)
        monkeypatch.setattr(BatchApplier, "write", write)


@pytest.fixture
def held(monkeypatch, matcher):
    matcher.run_once()  # the pending list: nothing
    # A sweep lands the batch in flight first: none during these tests.
    matcher.sweep_after_s, matcher._last_sweep = 3600, time.monotonic()
    # The matcher overlaps only while it is behind its stream (a read fills a batch).
    matcher.batch_size = 1
    return HeldWriter(monkeypatch)


def order_events(order) -> list[str]:
    return [event.payload["status"] for event in OutboxEvent.objects.filter(
        event_type="order.updated", payload__order_id=order.pk).order_by("id")]


def test_a_cancel_prepared_while_its_order_commits_cancels_it_once(traders, matcher, held):
    alice, _, _ = traders
    order = place(alice, "BUY", price=100, quantity=1)
    assert matcher.run_once() == 1  # the order's batch, held before its transaction
    order.refresh_from_db()
    assert order.status == "PENDING"
    order_cancel(user=alice, order_id=order.pk)

    assert matcher.run_once() == 1  # the cancel: the row still says PENDING, the batch in flight NEW
    matcher.land()

    assert held.prepared_on_top
    order.refresh_from_db()
    assert order.status == "CANCELED"
    assert order_events(order) == ["NEW", "CANCELED"]  # accepted into the book, then canceled from it
    assert balance(alice, "USDT")[1] == 0
    assert_sound(matcher)


def test_an_order_read_again_while_its_batch_commits_is_not_applied_twice(traders, matcher, held):
    """A second stream entry for the same order (as after a lost acknowledgement) is
    skipped: the batch in flight has already put the order in the book."""
    alice, bob, _ = traders
    order = place(alice, "SELL", price=100, quantity=1)
    assert matcher.run_once() == 1
    matcher.redis.xadd(matcher.stream, stream.command_fields("new", order.pk))
    taker = place(bob, "BUY", price=100, quantity=1)
    matcher.batch_size = 2

    assert matcher.run_once() == 2  # the duplicate, then a taker for exactly one unit
    matcher.land()

    order.refresh_from_db()
    taker.refresh_from_db()
    assert (order.status, order.status_reason, taker.status) == ("FILLED", "", "FILLED")  # never refused
    assert Trade.objects.filter(maker_order=order).count() == 1
    assert len(matcher.book) == 0
    assert_sound(matcher)


def test_an_amendment_read_again_while_it_commits_is_applied_once(traders, matcher, held):
    alice, _, _ = traders
    held.open.set()
    order = place(alice, "BUY", price=100, quantity=1)
    drain(matcher)  # resting
    order_amend(user=alice, order_id=order.pk, price=D(90), quantity=D(1))
    amendment = OrderAmendment.objects.get(order=order)
    held.open.clear()
    assert matcher.run_once() == 1  # the amendment, held
    matcher.redis.xadd(matcher.stream, stream.command_fields("amend", amendment.pk))

    assert matcher.run_once() == 1  # its duplicate, prepared while the first commits
    matcher.land()

    amendment.refresh_from_db()
    order.refresh_from_db()
    assert held.prepared_on_top
    assert (amendment.status, order.price) == ("APPLIED", D(90))
    assert order.priority_sequence == order.last_sequence == amendment.sequence  # one AMENDED, not two
    assert balance(alice, "USDT")[1] == D(90)  # the hold trued up to the new terms, once
    assert_sound(matcher)


def test_nothing_is_published_before_its_batch_commits(traders, matcher, held):
    alice, bob, _ = traders
    resting = place(alice, "SELL", price=100, quantity=1)
    assert matcher.run_once() == 1  # held
    depth = json.loads(matcher.redis.get(stream.depth_key(matcher.symbol)))
    assert depth["asks"] == []  # the batch in flight is not in the published book
    pending = matcher.redis.xpending(matcher.stream, stream.GROUP)["pending"]
    assert pending == 1  # nor acknowledged

    place(bob, "BUY", price=90, quantity=1)
    assert matcher.run_once() == 1  # lands the first batch: published with its own book
    depth = json.loads(matcher.redis.get(stream.depth_key(matcher.symbol)))
    assert depth["asks"] == [["100", "1"]] and depth["bids"] == []  # not the bid still in flight
    matcher.land()
    depth = json.loads(matcher.redis.get(stream.depth_key(matcher.symbol)))
    assert depth["bids"] == [["90", "1"]]
    assert matcher.redis.xpending(matcher.stream, stream.GROUP)["pending"] == 0
    resting.refresh_from_db()
    assert resting.status == "NEW"
    assert_sound(matcher)


def test_a_batch_that_fails_to_commit_voids_the_one_prepared_on_top(traders, matcher, held):
    """The book is rebuilt from the database and both batches are read again: each
    command is applied once."""
    alice, bob, _ = traders
    maker = place(alice, "SELL", price=100, quantity=1)
    held.fail_next_write = True
    assert matcher.run_once() == 1  # its write will fail
    taker = place(bob, "BUY", price=100, quantity=1)
    with pytest.raises(OperationalError):
        matcher.run_once()  # prepared on top, then the first batch's failure surfaces

    drain(matcher)

    maker.refresh_from_db()
    taker.refresh_from_db()
    assert (maker.status, taker.status) == ("FILLED", "FILLED")
    assert Trade.objects.filter(maker_order=maker, taker_order=taker).count() == 1
    assert order_events(maker).count("FILLED") == 1
    assert_sound(matcher)
