"""``manage.py bench_rebuild``: how long a matcher takes to restart on a big book.

Set-up, untimed, in a throwaway database ("bench_rebuild", created and
migrated on the configured server, dropped afterwards; ``--here`` uses the
current one): a market with ``--orders`` resting limit orders (half bids, half
asks, spread over 10,000 price levels each side, 1-100 lots, 1,000 users),
written by one ``INSERT ... SELECT FROM generate_series`` as a matcher would
have left them (status NEW, queue positions, the market's sequence).

Timed, ``--runs`` times, each a full matcher start (advisory lock, the book,
the backlog scan of recovery) then its stop:

1. ``rebuild_s``: ``book_from_database`` alone (the query and the restore),
   with the collector running, as before snapshots;
2. ``restart_s``: a start with no snapshot file: the book rebuilt from
   PostgreSQL (the collector off meanwhile, matching/worker/snapshot.py);
3. ``snapshot_restart_s``: a start from the snapshot file written after (2),
   the database still at the snapshot's sequence;
4. ``stale_snapshot_restart_s``: a start from that file after ``--changes``
   orders changed behind it (cancelled in PostgreSQL as the matcher would
   record it: new sequences, the market's sequence advanced), so the
   snapshot is brought up to date from the database.

Each start's book is checked: the same number of resting orders and best
prices as written. The last line is ``orders=<int> restart_s=<median>
rebuild_s=<median> snapshot_restart_s=<median> stale_snapshot_restart_s=<median>``.
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
from matching.worker import snapshot
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
        parser.add_argument("--changes", type=int, default=10_000,
                            help="orders changed after the snapshot for the stale-snapshot start")
        parser.add_argument("--here", action="store_true", help="use the current database, not a throwaway one")

    def handle(self, *args, orders: int, runs: int, here: bool, changes: int, **options):
        if orders < 2 or runs < 1:
            raise CommandError("--orders must be at least 2 and --runs at least 1")
        self.changes = max(0, min(changes, orders // 4))
        self.spacing = max(1, orders // max(1, self.changes))  # one order in every ``spacing`` changes
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
        path = snapshot.path_for(market.symbol)
        gc.collect()
        gc.freeze()
        times = {"restart": [], "rebuild": [], "snapshot_restart": [], "stale_snapshot_restart": []}
        for run in range(runs):
            path.unlink(missing_ok=True)
            begun = time.perf_counter()
            book = book_from_database(market)
            times["rebuild"].append(time.perf_counter() - begun)
            del book
            gc.collect()

            resting, bids, asks, written = self._start(market, times["restart"], "database", write=True)
            resting_s, bids_s, asks_s, _ = self._start(market, times["snapshot_restart"], "snapshot")
            if (resting_s, bids_s, asks_s) != (resting, bids, asks):
                raise CommandError("the book from the snapshot differs from the book from the database")
            cancelled = self._change_behind(market, run)
            resting_t, _, _, _ = self._start(market, times["stale_snapshot_restart"], "snapshot")
            if resting_t != resting - cancelled:
                raise CommandError(f"stale snapshot: {resting_t} orders resting, expected {resting - cancelled}")
            self._reopen(market, cancelled)
            self.stdout.write(
                f"run {run + 1}: restart {times['restart'][-1]:.2f}s, rebuild {times['rebuild'][-1]:.2f}s, "
                f"from snapshot {times['snapshot_restart'][-1]:.2f}s, from a snapshot {cancelled} changes behind "
                f"{times['stale_snapshot_restart'][-1]:.2f}s (snapshot written in {written:.2f}s), "
                f"best bid {bids[0][0] if bids else None} ask {asks[0][0] if asks else None}"
                f", {resting} orders resting")
        gc.unfreeze()
        path.unlink(missing_ok=True)
        medians = {name: statistics.median(values) for name, values in times.items()}
        self.stdout.write(
            f"orders={orders} restart_s={medians['restart']:.2f} rebuild_s={medians['rebuild']:.2f} "
            f"snapshot_restart_s={medians['snapshot_restart']:.2f} "
            f"stale_snapshot_restart_s={medians['stale_snapshot_restart']:.2f}")

    def _start(self, market, times: list, source: str, *, write: bool = False):
        begun = time.perf_counter()
        matcher = Matcher(market.symbol)
        matcher.start()
        times.append(time.perf_counter() - begun)
        if matcher.book_source != source:
            raise CommandError(f"the book came from the {matcher.book_source}, not the {source}")
        bids, asks = matcher.book.depth(1)
        resting = len(matcher.book)
        written = 0.0
        if write:
            begun = time.perf_counter()
            snapshot.write_snapshot(matcher.book, identity=snapshot.market_identity(matcher.market),
                                    path=snapshot.path_for(market.symbol))
            written = time.perf_counter() - begun
        matcher.stop()
        del matcher
        gc.collect()
        return resting, bids, asks, written

    def _change_behind(self, market, run: int) -> int:
        """Cancel ``--changes`` resting orders as a matcher would have recorded it."""
        if not self.changes:
            return 0
        state = MarketState.objects.get(market=market)
        with connection.cursor() as cursor:
            cursor.execute(
                """
                WITH picked AS (
                    SELECT id, row_number() OVER (ORDER BY id) AS n FROM orders_order
                    WHERE market_id = %s AND status = 'NEW' AND id %% %s = %s ORDER BY id LIMIT %s
                )
                UPDATE orders_order o SET status = 'CANCELED', status_reason = 'CANCEL',
                       last_sequence = %s + picked.n
                FROM picked WHERE o.id = picked.id
                """,
                [market.id, self.spacing, run % self.spacing, self.changes, state.last_sequence])
            changed = cursor.rowcount
        MarketState.objects.filter(market=market).update(last_sequence=state.last_sequence + changed)
        return changed

    def _reopen(self, market, changed: int) -> None:
        """Undo ``_change_behind`` for the next run (a rebuild from the database follows anyway)."""
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE orders_order SET status = 'NEW', status_reason = '' WHERE market_id = %s AND status = 'CANCELED'",
                [market.id])

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
