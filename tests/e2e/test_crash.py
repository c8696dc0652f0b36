"""Crash tests: a real matcher process SIGKILLed at random moments while
thousands of random orders, cancels and amendments arrive; restarted each
time. Also with Redis flushed mid-run.

At the end:
- every order is in a final or resting state (nothing PENDING, no request
  left unapplied);
- replaying, in a fresh engine, the commands in the order the matcher applied
  them (the sequences it recorded) gives the same trades, the same state for
  every order and the same book: the crashes changed nothing;
- no trade was recorded twice, and check_ledger is clean.
"""

from __future__ import annotations

import random
import signal
import sys
import threading
import time
from decimal import Decimal as D
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import close_old_connections, connection

from exchange import processes
from exchange.core.errors import ApplicationError
from exchange.core.redis import get_redis
from matching import engine
from matching.units import MarketUnits
from matching.worker.batch import BatchApplier
from matching.worker.rebuild import database_snapshot
from orders.models import OPEN_STATUSES, RESTING_STATUSES, Order, OrderAmendment, Trade
from orders.rules import OrderRequest
from orders.services import order_amend, order_cancel, order_place
from tests.e2e.harness import ROOT, child_env, wait_for
from tests.factories import UserFactory
from tests.matching.conftest import fund

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PLACERS = 3
COMMANDS_PER_PLACER = 700  # at least; placers go on until the matcher was killed MIN_KILLS times
MIN_KILLS = 6


class MatcherUnderFire:
    """The market's matcher process, killed and restarted on demand."""

    def __init__(self, symbol: str):
        self.symbol = symbol
        self.env = child_env()
        self.child = None
        self.kills = 0

    def start(self):
        self.child = processes.spawn(
            f"matcher-{self.symbol}",
            [sys.executable, "manage.py", "run_matcher", self.symbol, "--batch-size", "200"],
            env=self.env, cwd=ROOT,
        )

    def kill(self):
        self.child.popen.send_signal(signal.SIGKILL)
        self.child.popen.wait()
        self.kills += 1

    def ensure_running(self):
        # A killed matcher's database session can hold the market's advisory
        # lock for a moment; its successor then exits and is started again.
        if self.child is None or not self.child.alive():
            self.start()

    def stop(self):
        if self.child is not None:
            processes.stop([self.child])


def _place_random(rng: random.Random, users, symbol: str, counter: list):
    user = rng.choice(users)
    roll = rng.random()
    try:
        if roll < 0.72:
            side = rng.choice(["BUY", "SELL"])
            price = D(100) + D(rng.randint(-8, 8)) / 4
            quantity = D(rng.randint(1, 40)) / 10
            order_type = rng.choice(["LIMIT"] * 6 + ["LIMIT_MAKER", "MARKET"])
            if order_type == "MARKET":
                request = OrderRequest(side=side, type="MARKET", quantity=quantity)
            else:
                request = OrderRequest(side=side, type=order_type, price=price, quantity=quantity,
                                       time_in_force=rng.choice(["GTC"] * 5 + ["IOC", "FOK"]) if order_type == "LIMIT" else None,
                                       stp_mode=rng.choice([None, "NONE", "EXPIRE_MAKER"]))
            order_place(user=user, symbol=symbol, request=request)
        elif roll < 0.9:
            ids = list(Order.objects.filter(user=user, status__in=OPEN_STATUSES).values_list("id", flat=True)[:50])
            if ids:
                order_cancel(user=user, order_id=rng.choice(ids))
        else:
            resting = list(Order.objects.filter(user=user, status__in=RESTING_STATUSES, type="LIMIT")[:50])
            if resting:
                order = rng.choice(resting)
                order_amend(user=user, order_id=order.pk, price=order.price + rng.choice([D("-0.25"), D("0.25")]),
                            quantity=order.filled_quantity + D(rng.randint(1, 30)) / 10)
        counter[0] += 1
    except ApplicationError:
        pass  # e.g. an amend of an order that just filled


def _run(market, users, *, flush_redis_at: set[int], seed: int):
    matcher = MatcherUnderFire(market.symbol)
    matcher.start()
    done = threading.Event()
    applied = [0]
    errors = []

    def placer(index: int):
        rng = random.Random(seed * 100 + index)
        try:
            # However fast placing has become, the run lasts until recovery was exercised.
            for step in range(COMMANDS_PER_PLACER * 10):
                if step >= COMMANDS_PER_PLACER and matcher.kills >= MIN_KILLS:
                    break
                _place_random(rng, users, market.symbol, applied)
                if index == 0 and step in flush_redis_at:
                    get_redis().flushdb()
        except Exception as exc:  # surfaced below; a placer must not die silently
            errors.append(exc)
        finally:
            close_old_connections()
            connection.close()

    def killer():
        rng = random.Random(seed)
        while not done.is_set():
            time.sleep(rng.uniform(0.3, 1.5))
            if done.is_set():
                break
            matcher.ensure_running()
            time.sleep(rng.uniform(0.05, 0.6))  # let it recover and apply some batches, then kill mid-flight
            matcher.kill()
            matcher.start()

    threads = [threading.Thread(target=placer, args=(i,)) for i in range(PLACERS)]
    kill_thread = threading.Thread(target=killer)
    for thread in threads:
        thread.start()
    kill_thread.start()
    for thread in threads:
        thread.join()
    done.set()
    kill_thread.join()
    assert not errors, errors
    try:
        def drained():
            matcher.ensure_running()
            return not (
                Order.objects.filter(market=market, status="PENDING").exists()
                or Order.objects.filter(market=market, cancel_requested_at__isnull=False,
                                        status__in=OPEN_STATUSES).exists()
                or OrderAmendment.objects.filter(order__market=market, status="REQUESTED").exists()
            )

        wait_for(drained, timeout_s=120, interval_s=0.5, what="the matcher to apply every command")
    finally:
        matcher.stop()
    return matcher.kills, applied[0]


def _replay(market) -> tuple[engine.OrderBook, list, dict]:
    """The commands the matcher applied, in the order of the sequences it
    recorded, through a fresh engine: its trades and every order's outcome."""
    book = engine.OrderBook(market.symbol, stp_default=market.stp_default)
    applier = BatchApplier(market, book)
    units = MarketUnits.of(market)
    commands = []
    fields = ("id", "user_id", "side", "type", "time_in_force", "price", "stop_price", "quantity", "quote_quantity",
              "hold_amount", "stp_mode", "status", "cancel_requested_at", "created_at", "maker_fee_rate",
              "taker_fee_rate", "accepted_sequence", "last_sequence", "status_reason")
    for row in Order.objects.filter(market=market).values(*fields):
        if row["accepted_sequence"] is not None:
            commands.append((row["accepted_sequence"], "new", row))
            if row["status"] == "CANCELED" and row["status_reason"] == "CANCEL":
                commands.append((row["last_sequence"], "cancel", row))
        elif row["status"] == "REJECTED":
            commands.append((row["last_sequence"], "new", row))
    for amendment in OrderAmendment.objects.filter(order__market=market, sequence__isnull=False).select_related("order"):
        commands.append((amendment.sequence, "amend", amendment))
    commands.sort(key=lambda item: item[0])
    trades, outcome = [], {}
    for _, kind, item in commands:
        if kind == "new":
            command = applier._new_order_command(_as_placed(item))
        elif kind == "cancel":
            command = engine.CancelOrder(order_id=item["id"], user_id=item["user_id"])
        else:
            command = engine.AmendOrder(
                order_id=item.order_id, user_id=item.order.user_id,
                price_ticks=None if item.new_price is None else units.price_to_ticks(item.new_price),
                quantity_lots=None if item.new_quantity is None else units.quantity_to_lots(item.new_quantity))
        for event in book.apply(command):
            if event.kind == "TRADE":
                trades.append((event.maker_order_id, event.taker_order_id, event.price_ticks, event.quantity_lots))
            elif event.kind in engine.TERMINAL_KINDS:
                outcome[event.order_id] = (event.kind, event.quantity_lots_filled)
    return book, trades, outcome


def _as_placed(row: dict) -> dict:
    """The order row with the terms it was placed with: amendments change the
    row, and each applied amendment records the terms it replaced."""
    first = OrderAmendment.objects.filter(order_id=row["id"], status="APPLIED").order_by("sequence").first()
    if first is None:
        return row
    return {**row, "price": first.previous_price, "quantity": first.previous_quantity}


def _check(market):
    units = MarketUnits.of(market)
    assert not Order.objects.filter(market=market, status="PENDING").exists()
    sequences = list(Trade.objects.filter(market=market).values_list("sequence", flat=True))
    assert len(sequences) == len(set(sequences)), "a trade was recorded twice"

    book, trades, outcome = _replay(market)
    recorded = [
        (maker, taker, units.price_to_ticks(price), units.quantity_to_lots(quantity))
        for maker, taker, price, quantity in Trade.objects.filter(market=market).order_by("sequence").values_list(
            "maker_order_id", "taker_order_id", "price", "quantity")
    ]
    assert recorded == trades
    for order_id, status, filled in Order.objects.filter(market=market, accepted_sequence__isnull=False).values_list(
            "id", "status", "filled_quantity"):
        if order_id in outcome:
            kind, filled_lots = outcome[order_id]
            assert (status, units.quantity_to_lots(filled)) == (kind, filled_lots), order_id
        else:
            assert status in ("NEW", "PARTIALLY_FILLED", "UNTRIGGERED"), (order_id, status)
            assert order_id in book
    replayed, stored = book.snapshot(), database_snapshot(market)
    assert (replayed["bids"], replayed["asks"]) == (stored["bids"], stored["asks"])

    out = StringIO()
    call_command("check_ledger", stdout=out)
    assert "ledger ok" in out.getvalue()


@pytest.fixture
def crash_market(settings, redis_app):
    from tests.matching.conftest import FUNDS
    from tests.factories import AssetFactory, MarketFactory

    # Orders keep coming while the matcher is down, as they would while a
    # supervisor restarts it.
    settings.ORDERS_REQUIRE_LIVE_MATCHER = False
    market = MarketFactory(
        base=AssetFactory(code="BTC", precision=8), quote=AssetFactory(code="USDT", precision=8),
        tick_size=D("0.25"), step_size=D("0.1"), min_quantity=D("0.1"), max_quantity=D("1000"), min_notional=D("1"),
        price_band=D("0.5"))
    users = [UserFactory(username=f"crash{i}") for i in range(6)]
    for user in users:
        fund(user, market, FUNDS)
    return market, users


def test_matcher_killed_at_random_moments_loses_and_duplicates_nothing(crash_market):
    market, users = crash_market
    kills, applied = _run(market, users, flush_redis_at=set(), seed=7)
    assert kills >= MIN_KILLS, f"only {kills} kills: the test did not exercise recovery"
    # Most commands are accepted; amends refused while an earlier one waits
    # (AMENDMENT_PENDING) grow with the machine's load, so leave room for them.
    assert applied > PLACERS * COMMANDS_PER_PLACER * 0.5
    assert Trade.objects.filter(market=market).count() > 100
    _check(market)


def test_redis_flushed_mid_run_loses_no_order(crash_market):
    market, users = crash_market
    kills, applied = _run(market, users, flush_redis_at={150, 400}, seed=11)
    assert Trade.objects.filter(market=market).count() > 100
    _check(market)
