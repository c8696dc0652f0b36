"""``manage.py bench_restart``: how long a market is without its matcher after a SIGKILL.

Set-up: a fresh market and funded users in the current database; its
matcher runs under the same ``Supervisor`` as ``run_matchers`` (a real
``manage.py run_matcher`` child process with its ready pipe).

Load: a thread places orders through ``orders.services.order_place`` (the
path of the API: pulse check, holds, XADD after commit) at about
``--rate`` per second, crossing and resting alternately, so the market trades
the whole time.

With a standby (the default, as ``run_matchers``) the kill lands on a market
whose standby has had ``--interval`` seconds to start; ``--no-standby``
measures a cold start of ``run_matcher`` instead.

Timed, ``--kills`` times: after ``--interval`` seconds of trading the
matcher is SIGKILLed; the time until an order placed after the kill is
applied (no longer PENDING) is the outage. The new matcher's start, its
recovery and the lock its predecessor's session held are all inside it.
Refusals (503 MATCHER_UNAVAILABLE) are counted. The last line is
``kills=<n> back_p50_s=<x> back_p99_s=<x> back_max_s=<x> refused=<n>``.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from decimal import Decimal as D

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from exchange.core.errors import ApplicationError
from matching.bench_feed import bench_market, funded_traders
from matching.management.commands.run_matchers import Supervisor, spawn_matcher
from orders.models import Order
from orders.rules import OrderRequest
from orders.services import order_place


class Command(BaseCommand):
    help = "Benchmark how fast a SIGKILLed matcher is back applying commands under its supervisor."

    def add_arguments(self, parser):
        parser.add_argument("--kills", type=int, default=20)
        parser.add_argument("--interval", type=float, default=2.0, help="seconds of trading between kills")
        parser.add_argument("--rate", type=float, default=100.0, help="orders per second placed")
        parser.add_argument("--no-standby", action="store_true", help="as run_matchers --no-standby")

    def handle(self, *args, kills: int, interval: float, rate: float, no_standby: bool, **options):
        if kills < 1 or rate <= 0:
            raise CommandError("--kills must be at least 1 and --rate positive")
        market = bench_market("K")
        traders = funded_traders(market, 10, name=f"restart-{market.symbol}")
        symbol = market.symbol
        supervisor = Supervisor(lambda: [symbol], spawn_matcher, standby=not no_standby)
        stop = threading.Event()
        placed: list[tuple[float, int]] = []  # (monotonic time of the acknowledgement, order id)
        counters = {"refused": 0, "errors": 0}

        def supervise():
            while not stop.is_set():
                supervisor.step(timeout_s=0.2)

        def place():
            index = 0
            period = 1.0 / rate
            try:
                while not stop.is_set():
                    begun = time.monotonic()
                    user = traders[index % len(traders)]
                    side = "BUY" if index % 2 else "SELL"
                    # Pairs at the same price cross; every fourth order rests a tick away.
                    price = D("1000.00") + (D("0.01") if index % 4 == 3 and side == "SELL" else 0)
                    try:
                        order, _ = order_place(user=user, symbol=symbol, request=OrderRequest(
                            side=side, type="LIMIT", price=price, quantity=D("0.01")))
                        placed.append((time.monotonic(), order.pk))
                    except ApplicationError as exc:
                        key = "refused" if getattr(exc, "code", "") == "MATCHER_UNAVAILABLE" else "errors"
                        counters[key] += 1
                    index += 1
                    time.sleep(max(0.0, period - (time.monotonic() - begun)))
            finally:
                connection.close()

        def slot():
            return supervisor.slots.get(symbol)

        supervisor_thread = threading.Thread(target=supervise, daemon=True)
        supervisor_thread.start()
        outages = []
        try:
            self._wait(lambda: slot() is not None and slot().ready, 60, "the first matcher never became ready")
            placer = threading.Thread(target=place, daemon=True)
            placer.start()
            for kill in range(kills):
                time.sleep(interval)
                victim = slot().child.pid
                killed_at = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                # The outage ends when an order acknowledged after the kill is applied.
                self._wait(lambda: any(t > killed_at for t, _ in placed[-50:]), 30, "no order placed after the kill")
                first_after = next(order_id for t, order_id in placed if t > killed_at)
                self._wait(lambda: Order.objects.filter(pk=first_after).exclude(status="PENDING").exists(), 60,
                           "an order placed after the kill was never applied", step=0.005)
                outages.append(time.monotonic() - killed_at)
                self.stdout.write(f"kill {kill + 1}: pid {victim}, back applying in {outages[-1]:.3f}s")
        finally:
            stop.set()
            supervisor_thread.join(timeout=5)
            supervisor.close()
        outages.sort()
        p99 = outages[min(len(outages) - 1, int(round(0.99 * (len(outages) - 1))))]
        pending = Order.objects.filter(market=market, status="PENDING").count()
        self.stdout.write(
            f"{len(placed)} orders placed, {counters['refused']} refused (MATCHER_UNAVAILABLE), "
            f"{counters['errors']} other errors, {pending} still PENDING at the end (the last matcher was stopped)")
        self.stdout.write(
            f"kills={len(outages)} back_p50_s={statistics.median(outages):.3f} back_p99_s={p99:.3f} "
            f"back_max_s={outages[-1]:.3f} refused={counters['refused']}")

    @staticmethod
    def _wait(condition, timeout_s: float, message: str, step: float = 0.02) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise CommandError(message)
            time.sleep(step)
