"""``manage.py bench_rebuild``: how long a matcher takes to restart on a big book.

Set-up, untimed, in a throwaway database ("bench_rebuild", created and
migrated on the configured server, dropped afterwards; ``--here`` uses the
current one): a market with ``--orders`` resting limit orders (half bids, half
asks, spread over 10,000 price levels each side, 1-100 lots, 1,000 users),
written by one ``INSERT ... SELECT FROM generate_series`` as a matcher would
have left them (status NEW, queue positions, the market's sequence).

Timed, ``--runs`` times: a full matcher start (advisory lock, rebuild of the
book from PostgreSQL, the backlog scan of recovery), then its stop. The last
line is ``orders=<int> restart_s=<median> rebuild_s=<median>``, where
``rebuild_s`` is ``book_from_database`` alone (the query and the restore).
"""

from __future__ import annotations

import gc
import statistics
import time
from decimal import Decimal as D

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from exchange.core.redis import get_redis
from exchange.models import Asset, Market
from matching import stream
from matching.models import MarketState
from matching.worker.matcher import Matcher
from matching.worker.rebuild import book_from_database

SYMBOL = "RBLD-RUSD"
MID = D("100000.00")
TICK = D("0.01")
STEP = D("0.0001")
LEVELS = 10_000
USERS = 1_000


class Command(BaseCommand):
    help = "Benchmark a matcher's restart (rebuild from PostgreSQL) on a book of many resting orders."

    def add_arguments(self, parser):
        parser.add_argument("--orders", type=int, default=1_000_000)
        parser.add_argument("--runs", type=int, default=3)
        parser.add_argument("--here", action="store_true", help="use the current database, not a throwaway one")

    def handle(self, *args, orders: int, runs: int, here: bool, **options):
        if orders < 2 or runs < 1:
            raise CommandError("--orders must be at least 2 and --runs at least 1")
        if here:
            return self._bench(orders, runs)
        creation = connection.creation
        connection.settings_dict.setdefault("TEST", {})["NAME"] = "bench_rebuild"
        original = connection.settings_dict["NAME"]
        creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        try:
            self._bench(orders, runs)
        finally:
            creation.destroy_test_db(original, verbosity=0)

    def _bench(self, orders: int, runs: int) -> None:
        started = time.perf_counter()
        market = self._setup(orders)
        self.stdout.write(f"setup: {orders} resting orders on {market.symbol} in {time.perf_counter() - started:.1f}s")
        gc.collect()
        gc.freeze()
        restarts, rebuilds = [], []
        for run in range(runs):
            begun = time.perf_counter()
            book = book_from_database(market)
            rebuilds.append(time.perf_counter() - begun)
            resting = len(book)
            del book
            gc.collect()

            begun = time.perf_counter()
            matcher = Matcher(market.symbol)
            matcher.start()
            restarts.append(time.perf_counter() - begun)
            bids, asks = matcher.book.depth(1)
            matcher.stop()
            del matcher
            gc.collect()
            self.stdout.write(
                f"run {run + 1}: restart {restarts[-1]:.2f}s, rebuild {rebuilds[-1]:.2f}s, "
                f"best bid {bids[0][0] if bids else None} ask {asks[0][0] if asks else None}"
                f", {resting} orders resting")
        gc.unfreeze()
        self.stdout.write(
            f"orders={orders} restart_s={statistics.median(restarts):.2f} rebuild_s={statistics.median(rebuilds):.2f}")

    def _setup(self, orders: int) -> Market:
        base, _ = Asset.objects.get_or_create(code="RBLD", defaults={"name": "Rebuild coin", "precision": 8})
        quote, _ = Asset.objects.get_or_create(code="RUSD", defaults={"name": "Rebuild dollar", "precision": 8})
        Market.objects.filter(symbol=SYMBOL).delete()
        market = Market.objects.create(
            symbol=SYMBOL, base=base, quote=quote, tick_size=TICK, step_size=STEP, min_quantity=STEP,
            max_quantity=D(1000), min_notional=D(0), maker_fee_rate=D("0.001"), taker_fee_rate=D("0.002"),
            price_band=D("0.5"))
        User = get_user_model()
        User.objects.bulk_create(
            [User(username=f"rebuild-{index}") for index in range(USERS)], ignore_conflicts=True)
        first_user, last_user = (
            User.objects.filter(username__startswith="rebuild-").order_by("id").values_list("id", flat=True)[i]
            for i in (0, USERS - 1))
        if last_user - first_user != USERS - 1:
            raise CommandError("the bench users' ids are not contiguous; use a throwaway database")
        with connection.cursor() as cursor:
            # Order g (1..N): a bid when g is odd, an ask when even; its level is
            # (g-1)/2 mod LEVELS ticks, plus one, away from the mid; queue position g.
            cursor.execute(
                """
                INSERT INTO orders_order (
                    client_order_id, side, type, time_in_force, price, quantity, stp_mode, hold_amount,
                    maker_fee_rate, taker_fee_rate, status, status_reason, filled_quantity, filled_notional,
                    fee_total, accepted_sequence, priority_sequence, last_sequence, created_at, updated_at,
                    market_id, user_id)
                SELECT 'rb' || g,
                       CASE WHEN g %% 2 = 1 THEN 'BUY' ELSE 'SELL' END, 'LIMIT', 'GTC',
                       CASE WHEN g %% 2 = 1 THEN %(mid)s - %(tick)s * (1 + ((g - 1) / 2) %% %(levels)s)
                            ELSE %(mid)s + %(tick)s * (1 + ((g - 1) / 2) %% %(levels)s) END,
                       %(step)s * (1 + g %% 100), 'EXPIRE_TAKER', 0, 0.001, 0.002, 'NEW', '', 0, 0, 0,
                       g, g, g, now(), now(), %(market)s, %(first_user)s + g %% %(users)s
                FROM generate_series(1, %(orders)s) AS g
                """,
                {"mid": MID, "tick": TICK, "levels": LEVELS, "step": STEP, "market": market.id,
                 "first_user": first_user, "users": USERS, "orders": orders},
            )
            cursor.execute("ANALYZE orders_order")
        MarketState.objects.update_or_create(market=market, defaults={"last_sequence": orders, "last_price": MID})
        redis = get_redis()
        redis.delete(stream.stream_key(market.symbol), stream.heartbeat_key(market.symbol))
        return market
