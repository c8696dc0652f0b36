"""``manage.py bench_matcher``: orders per second through stream -> engine -> commit.

Setup (not timed): a fresh market and funded users; ``--orders`` commands in
the engine benchmark's standard mix (70% limits around a mid price, about a
third of them crossing; 20% cancels of a random resting order; 10% market
orders), each inserted as it would be by the API: the order row PENDING with
its funds held (or the cancel flagged), then a reference XADDed to the
market's stream.

Timed: a matcher draining the stream in batches, each batch applied to
PostgreSQL (orders, trades, candles, settlement with fees, hold releases) and
committed, then acknowledged and published; the engine runs each batch while
the one before it commits, as in production. The last line is
``orders_per_s=<int> apply_p99_ms=<float>`` (commands per second over the
whole drain; 99th percentile of one batch's time from reading its entries to
its commit).

``--markets N`` (N > 1) sets up N such markets, each with its own funded
users and the same workload from seeds ``--seed``, ``--seed``+1, ...; they
share the quote asset, as markets quoted in one currency do. Each market's
matcher runs in its own OS process, as in production (``run_matchers``): a
fresh ``manage.py bench_matcher --drain SYMBOL`` that starts its matcher,
says ``ready``, waits for ``go`` on its standard input (sent to all of them
once every market's commands are queued) and prints its drain as one JSON
line. A line per market gives its rate and batch apply p50/p99; the last line
is ``orders_per_s=<int> apply_p99_ms=<float> total_orders_per_s=<int>``: the
slowest market's rate, the highest market p99, and all commands over the
time from the first matcher's start to the last one's end.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from exchange import processes
from exchange.core.config import database_url
from exchange.core.redis import get_redis
from exchange.models import Market
from exchange.outbox.bench import processes_cpu_s
from matching import stream
from matching.bench import generate
from matching.bench_feed import accept, bench_market, funded_traders
from matching.worker.matcher import Matcher
from orders.models import Order
from wallet.fees import fee_rates_for

DEFAULT_BIAS_TICKS = 5.5  # as matching.bench: about a third of limits cross, ~1,000 rest


@dataclass
class Drain:
    """One matcher's timed drain of its stream. Times are ``time.monotonic()``
    (CLOCK_MONOTONIC on Linux: comparable between processes)."""

    symbol: str
    begun_s: float
    ended_s: float
    durations_s: list[float]  # each batch's time from reading its entries to its commit
    python_cpu_s: float  # the matcher's process (its thread and its writer thread)
    postgres_cpu_s: float  # their two PostgreSQL backends

    @property
    def elapsed_s(self) -> float:
        return self.ended_s - self.begun_s

    def apply_ms(self, percentile: int) -> float:
        if len(self.durations_s) == 1:
            return self.durations_s[0] * 1000
        if percentile == 50:
            return statistics.median(self.durations_s) * 1000
        return statistics.quantiles(self.durations_s, n=100)[percentile - 1] * 1000


def drain_matcher(matcher: Matcher, *, profile: str = "") -> Drain:
    """Run the started ``matcher`` until its stream is empty and every entry
    acknowledged, keeping each batch's time from read to commit (and profiling
    every batch into ``profile``, if named). CPU is that of this process (the
    matcher's thread and its writer thread) and of their two PostgreSQL backends."""
    gc.collect()
    gc.freeze()
    profilers = _profile(matcher) if profile else []
    redis = get_redis()
    backend_pids = matcher.backend_pids()
    matcher.batch_latencies.clear()
    cpu_begun = time.process_time(), processes_cpu_s(backend_pids)
    begun = time.monotonic()
    while True:
        handled = matcher.run_once()
        if handled == 0 and matcher._read_id == ">" and redis.xlen(matcher.stream) == 0:
            break
        if handled == 0 and not redis.xpending(matcher.stream, stream.GROUP)["pending"]:
            info = redis.xinfo_groups(matcher.stream)[0]
            if info["last-delivered-id"] == redis.xinfo_stream(matcher.stream)["last-generated-id"]:
                break
    matcher.land()
    ended = time.monotonic()
    result = Drain(matcher.symbol, begun, ended, list(matcher.batch_latencies),
                   python_cpu_s=time.process_time() - cpu_begun[0],
                   postgres_cpu_s=processes_cpu_s(backend_pids) - cpu_begun[1])
    gc.unfreeze()
    if profilers:
        stats = pstats.Stats(profilers[0])
        stats.add(profilers[1])
        stats.dump_stats(profile)
    return result


def _profile(matcher: Matcher) -> list[cProfile.Profile]:
    """cProfile of every batch: its preparation on the matcher's thread and its
    write on the writer thread (one profiler each: a profiler follows one thread)."""
    applier = matcher.applier
    profilers = [cProfile.Profile(), cProfile.Profile()]

    def profiled(profiler, method):
        def run(*args, **kwargs):
            profiler.enable()
            try:
                return method(*args, **kwargs)
            finally:
                profiler.disable()
        return run

    applier.prepare = profiled(profilers[0], applier.prepare)
    applier.write = profiled(profilers[1], applier.write)
    return profilers


class Command(BaseCommand):
    help = "Benchmark markets' matchers end to end (stream -> engine -> PostgreSQL commit)."

    def add_arguments(self, parser):
        parser.add_argument("--orders", type=int, default=50_000, help="commands per market")
        parser.add_argument("--markets", type=int, default=1,
                            help="markets whose matchers run at once, each in its own process")
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument("--users", type=int, default=200, help="funded users per market")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--profile", metavar="FILE", default="",
                            help="cProfile every batch (preparation and write) and write the stats to FILE (pstats format); "
                                 "with several markets, to FILE.<SYMBOL> each")
        # A matcher process of a --markets run (see the module docstring).
        parser.add_argument("--drain", metavar="SYMBOL", default="", help=argparse.SUPPRESS)

    def handle(self, *args, orders: int, batch_size: int, users: int, seed: int, profile: str = "",
               markets: int = 1, drain: str = "", **options):
        if drain:
            self._drain_process(drain, batch_size=batch_size, profile=profile)
            return
        if markets < 1:
            raise CommandError("--markets must be at least 1")
        setups = []
        for _ in range(markets):
            market = bench_market("B")
            setups.append((market, funded_traders(market, users, name=f"bench-{market.symbol}")))
        symbols = [market.symbol for market, _ in setups]
        if markets == 1:
            # The matcher starts (and recovers, on an empty market) before the
            # commands exist: started after them, its recovery would apply them all
            # from the database before the clock starts, and the timed loop would
            # only skip stream entries already applied.
            matcher = Matcher(symbols[0], batch_size=batch_size, block_ms=1)
            matcher.start()
            try:
                self._enqueue_all(setups, orders, seed)
                drains = [drain_matcher(matcher, profile=profile)]
            finally:
                matcher.stop()
        else:
            children = [self._spawn(symbol, batch_size=batch_size, profile=profile) for symbol in symbols]
            try:
                for child in children:
                    self._expect(child, "ready")  # started and recovered, as above
                self._enqueue_all(setups, orders, seed)
                drains = self._drain_in(children)
            finally:
                processes.stop(children)
        self._report(setups, drains, orders)

    # ------------------------------------------------------------- set-up

    def _enqueue_all(self, setups, orders: int, seed: int) -> None:
        markets = [market for market, _ in setups]
        names = markets[0].symbol if len(markets) == 1 else f"each of {len(markets)} markets"
        self.stdout.write(f"setup: {orders} commands on {names} ...")
        started = time.perf_counter()
        stats = [self._enqueue(market, traders, orders, seed + index) for index, (market, traders) in enumerate(setups)]
        self.stdout.write(
            f"setup done in {time.perf_counter() - started:.1f}s: crossing limits "
            f"{'/'.join(format(s['crossing_limit_share'], '.0%') for s in stats)}, "
            f"median resting {'/'.join(str(s['resting_orders_median']) for s in stats)}; draining")
        if Order.objects.filter(market__in=markets).exclude(status="PENDING").exists():
            raise CommandError("orders were matched before the clock started: the figure would not measure matching")

    def _enqueue(self, market: Market, traders, count: int, seed: int) -> dict:
        """The engine benchmark's standard mix (``matching.bench.generate``: about a
        third of limits cross, about 1,000 orders rest), inserted as the API
        would in chunks (order rows PENDING with their funds held, cancels
        flagged) and XADDed in order."""
        commands, stats, _ = generate(seed, count, (70, 20, 10), DEFAULT_BIAS_TICKS, len(traders))
        redis = get_redis()
        key = stream.stream_key(market.symbol)
        rates = fee_rates_for(user=traders[0], market=market)
        db_id: dict[int, int] = {}  # engine order id -> database order id
        for start in range(0, len(commands), 2000):
            _, entries = accept(commands[start:start + 2000], market=market, traders=traders, rates=rates, db_id=db_id)
            pipe = redis.pipeline(transaction=False)
            for fields in entries:
                pipe.xadd(key, fields)
            pipe.execute()
        return stats

    # ------------------------------------------------- matcher processes

    def _spawn(self, symbol: str, *, batch_size: int, profile: str) -> processes.Child:
        """``manage.py bench_matcher --drain SYMBOL`` on this run's database (the
        test database too) and Redis, talking over its standard input and output."""
        argv = [sys.executable, str(settings.BASE_DIR / "manage.py"), "bench_matcher", "--drain", symbol,
                "--batch-size", str(batch_size)]
        if profile:
            argv += ["--profile", f"{profile}.{symbol}"]
        env = {"DATABASE_URL": database_url(connection.settings_dict), "REDIS_URL": settings.REDIS_URL}
        return processes.spawn(f"bench-matcher-{symbol}", argv, env={**os.environ, **env},
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    @staticmethod
    def _expect(child: processes.Child, word: str) -> str:
        line = child.popen.stdout.readline()
        if not line.strip():
            child.popen.wait()
            raise CommandError(f"{child.name} exited ({child.popen.returncode}) before saying {word}")
        if word != "result" and line.strip() != word:
            raise CommandError(f"{child.name} said {line.strip()!r}, not {word}")
        return line

    def _drain_in(self, children: list[processes.Child]) -> list[Drain]:
        for child in children:  # all at once: nothing between the writes
            child.popen.stdin.write("go\n")
            child.popen.stdin.flush()
        drains = [Drain(**json.loads(self._expect(child, "result"))) for child in children]
        for child in children:
            if child.popen.wait() != 0:
                raise CommandError(f"{child.name} exited with {child.popen.returncode}")
        return drains

    def _drain_process(self, symbol: str, *, batch_size: int, profile: str) -> None:
        """One matcher of a ``--markets`` run: start, say ready, wait for go, drain,
        print the drain as JSON."""
        matcher = Matcher(symbol, batch_size=batch_size, block_ms=1)
        matcher.start()
        try:
            self.stdout.write("ready")
            self.stdout.flush()
            if sys.stdin.readline().strip() != "go":
                raise CommandError("the benchmark went away before it said go")
            result = drain_matcher(matcher, profile=profile)
        finally:
            matcher.stop()
        self.stdout.write(json.dumps(asdict(result)))

    # ------------------------------------------------------------- report

    def _report(self, setups, drains: list[Drain], orders: int) -> None:
        several = len(drains) > 1
        for (market, _), result in zip(setups, drains):
            pending = Order.objects.filter(market=market, status="PENDING").count()
            if pending:
                raise CommandError(
                    f"{pending} orders were left PENDING on {market.symbol}: the drain did not apply every command")
            line = (f"{orders} commands in {result.elapsed_s:.2f}s, {len(result.durations_s)} batches, "
                    f"{market.trades.count()} trades; batch read-to-commit p50 {result.apply_ms(50):.1f} ms")
            if several:
                line = (f"{market.symbol}: {line}, p99 {result.apply_ms(99):.1f} ms; "
                        f"{int(orders / result.elapsed_s)} orders/s")
            self.stdout.write(line)
        total = orders * len(drains)
        span_s = max(d.ended_s for d in drains) - min(d.begun_s for d in drains)
        if several:
            self.stdout.write(f"{len(drains)} matcher processes at once: {total} commands in {span_s:.2f}s")
        # CPU time per order (the matchers' processes and their PostgreSQL backends) is far less
        # disturbed by other jobs on a shared machine than the wall-clock rate.
        python_cpu_s = sum(d.python_cpu_s for d in drains)
        postgres_cpu_s = sum(d.postgres_cpu_s for d in drains)
        summed = f"summed over {len(drains)} matchers; " if several else ""
        self.stdout.write(
            f"cpu per order: python {python_cpu_s / total * 1e6:.1f} us, postgres backends "
            f"{postgres_cpu_s / total * 1e6:.1f} us ({summed}WAL flushes and other backends not counted)")
        last = (f"orders_per_s={min(int(orders / d.elapsed_s) for d in drains)} "
                f"apply_p99_ms={max(d.apply_ms(99) for d in drains):.1f}")
        if several:
            last += f" total_orders_per_s={int(total / span_s)}"
        self.stdout.write(last)
