"""``manage.py bench_matcher``: orders per second through stream -> engine -> commit.

Setup (not timed): a fresh market and funded users; ``--orders`` commands in
the engine benchmark's standard mix (70% limits around a mid price, about a
third of them crossing; 20% cancels of a random resting order; 10% market
orders), each inserted as it would be by the API: the order row PENDING with
its funds held (or the cancel flagged), then a reference XADDed to the
market's stream.

Timed: a matcher draining the stream in batches, each batch applied to
PostgreSQL (orders, trades, candles, settlement with fees, hold releases) and
committed, then acknowledged and published. The last line is
``orders_per_s=<int> apply_p99_ms=<float>`` (commands per second over the
whole drain; 99th percentile of one batch's apply-and-commit time).
"""

from __future__ import annotations

import cProfile
import gc
import statistics
import time

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

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


class Command(BaseCommand):
    help = "Benchmark one market's matcher end to end (stream -> engine -> PostgreSQL commit)."

    def add_arguments(self, parser):
        parser.add_argument("--orders", type=int, default=50_000)
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument("--users", type=int, default=200)
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--profile", metavar="FILE", default="",
                            help="cProfile every batch apply and write the stats to FILE (pstats format)")

    def handle(self, *args, orders: int, batch_size: int, users: int, seed: int, profile: str = "", **options):
        market = bench_market("B")
        traders = funded_traders(market, users, name=f"bench-{market.symbol}")
        # The matcher starts (and recovers, on an empty market) before the
        # commands exist: started after them, its recovery would apply them all
        # from the database before the clock starts, and the timed loop would
        # only skip stream entries already applied.
        matcher = Matcher(market.symbol, batch_size=batch_size, block_ms=1)
        matcher.start()
        self.stdout.write(f"setup: {orders} commands on {market.symbol} ...")
        started = time.perf_counter()
        stats = self._enqueue(market, traders, orders, seed)
        self.stdout.write(
            f"setup done in {time.perf_counter() - started:.1f}s: crossing limits {stats['crossing_limit_share']:.0%}, "
            f"median resting {stats['resting_orders_median']}; draining")

        if Order.objects.filter(market=market).exclude(status="PENDING").exists():
            raise CommandError("orders were matched before the clock started: the figure would not measure matching")
        gc.collect()
        gc.freeze()
        durations = []
        real_apply = matcher.applier.apply
        profiler = cProfile.Profile() if profile else None

        def timed_apply(commands):
            begun = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            result = real_apply(commands)
            if profiler is not None:
                profiler.disable()
            durations.append(time.perf_counter() - begun)
            return result

        matcher.applier.apply = timed_apply
        redis = get_redis()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend_pid = cursor.fetchone()[0]
        cpu_begun = time.thread_time(), processes_cpu_s([backend_pid])
        begun = time.perf_counter()
        while True:
            handled = matcher.run_once()
            if handled == 0 and matcher._read_id == ">" and redis.xlen(matcher.stream) == 0:
                break
            if handled == 0 and not redis.xpending(matcher.stream, stream.GROUP)["pending"]:
                info = redis.xinfo_groups(matcher.stream)[0]
                if info["last-delivered-id"] == redis.xinfo_stream(matcher.stream)["last-generated-id"]:
                    break
        elapsed = time.perf_counter() - begun
        python_cpu_s = time.thread_time() - cpu_begun[0]
        postgres_cpu_s = processes_cpu_s([backend_pid]) - cpu_begun[1]
        matcher.stop()
        gc.unfreeze()
        if profiler is not None:
            profiler.dump_stats(profile)
        pending = Order.objects.filter(market=market, status="PENDING").count()
        if pending:
            raise CommandError(f"{pending} orders were left PENDING: the drain did not apply every command")
        trades = market.trades.count()
        rate = int(orders / elapsed)
        p99 = statistics.quantiles(durations, n=100)[98] * 1000 if len(durations) > 1 else durations[0] * 1000
        p50 = statistics.median(durations) * 1000
        self.stdout.write(
            f"{orders} commands in {elapsed:.2f}s, {len(durations)} batches, {trades} trades; "
            f"batch apply p50 {p50:.1f} ms")
        # CPU time per order (the matcher's thread and its PostgreSQL backend) is far less
        # disturbed by other jobs on a shared machine than the wall-clock rate.
        self.stdout.write(
            f"cpu per order: python {python_cpu_s / orders * 1e6:.1f} us, postgres backend "
            f"{postgres_cpu_s / orders * 1e6:.1f} us (WAL flushes and other backends not counted)")
        self.stdout.write(f"orders_per_s={rate} apply_p99_ms={p99:.1f}")

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
