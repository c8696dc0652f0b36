"""manage.py bench_ledger: trades settled per second through ``ledger_apply``, one transaction per batch.

Each batch is what a matcher commits: ``--batch`` trades between random
pairs of ``--users`` users (maker/taker fees, the buyer's hold larger than
the trade), each followed by closing both orders' holds (the buyer's excess
released), in ONE ``ledger_apply`` call and one database transaction,
commit included. The holds are placed before the clock starts.

By default it runs in a throwaway database ("bench_ledger", created and
migrated on the configured server, dropped afterwards), because journal rows
cannot be deleted. ``--here`` uses the current database instead (tests).
The last line is ``trades_per_s=<median of runs> batch_p50_ms=... batch_p99_ms=...``;
``-v 2`` prints every batch's time.
"""

from __future__ import annotations

import gc
import os
import platform
import random
import statistics
import time
from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import connection, transaction

from exchange.models import Asset
from wallet.fees import fee_amount
from wallet.services import HoldPlace, HoldRelease, TradeSettlement, deposit_credit, ledger_apply

MAKER_FEE_RATE, TAKER_FEE_RATE = Decimal("0.001"), Decimal("0.002")
LOT, TICK = Decimal("0.0001"), Decimal("0.01")


class Command(BaseCommand):
    help = "Benchmark batched trade settlement (trades/s in transactions of --batch trades)."

    def add_arguments(self, parser):
        parser.add_argument("--trades", type=int, default=5000, help="trades per run (default 5000)")
        parser.add_argument("--batch", type=int, default=500, help="trades per transaction (default 500)")
        parser.add_argument("--runs", type=int, default=5, help="runs; the median is reported (default 5)")
        parser.add_argument("--users", type=int, default=300, help="distinct traders (default 300)")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--here", action="store_true", help="use the current database, not a throwaway one")

    def handle(self, *args, **options):
        if options["here"]:
            return self._bench(options)
        creation = connection.creation
        connection.settings_dict.setdefault("TEST", {})["NAME"] = "bench_ledger"
        original = connection.settings_dict["NAME"]
        creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        try:
            self._bench(options)
        finally:
            creation.destroy_test_db(original, verbosity=0)

    def _bench(self, options) -> None:
        rng = random.Random(options["seed"])
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
            cursor.execute("SHOW synchronous_commit")
            synchronous_commit = cursor.fetchone()[0]
        self.stdout.write(
            f"machine: nproc={os.cpu_count()} python={platform.python_version()} "
            f"postgresql={version} synchronous_commit={synchronous_commit}"
        )
        base, quote, user_ids = self._setup(options["users"])
        # As a long-running matcher should after start-up: move everything
        # allocated so far out of the collector's reach, so that a full
        # collection does not pause a batch for ~100 ms scanning Django.
        gc.collect()
        gc.freeze()
        self.stdout.write(
            f"settling {options['trades']} trades per run in batches of {options['batch']} "
            f"between {len(user_ids)} users, {options['runs']} runs"
        )
        rates, batch_ms = [], []
        sequence = iter(range(10**12))
        for run in range(options["runs"]):
            run_seconds = 0.0
            remaining = options["trades"]
            while remaining > 0:
                size = min(options["batch"], remaining)
                remaining -= size
                operations = self._batch(rng, sequence, size, base, quote, user_ids)
                started = time.perf_counter()
                with transaction.atomic():
                    ledger_apply(operations)
                elapsed = time.perf_counter() - started
                run_seconds += elapsed
                batch_ms.append(elapsed * 1000)
                if options["verbosity"] > 1:
                    self.stdout.write(f"  batch {len(batch_ms)}: {elapsed * 1000:.1f} ms")
            rates.append(options["trades"] / run_seconds)
            self.stdout.write(f"run {run + 1}: {rates[-1]:.0f} trades/s")
        batch_ms.sort()
        p50 = statistics.median(batch_ms)
        p99 = batch_ms[min(len(batch_ms) - 1, int(len(batch_ms) * 0.99))]
        self.stdout.write(f"trades_per_s={statistics.median(rates):.0f} batch_p50_ms={p50:.1f} batch_p99_ms={p99:.1f}")

    def _setup(self, users: int) -> tuple[Asset, Asset, list[int]]:
        from django.contrib.auth import get_user_model

        User = get_user_model()
        base, _ = Asset.objects.get_or_create(code="BENCHBASE", defaults={"name": "Bench base", "precision": 8})
        quote, _ = Asset.objects.get_or_create(code="BENCHQUOTE", defaults={"name": "Bench quote", "precision": 6})
        operator, _ = User.objects.get_or_create(username="bench-operator")
        user_ids = []
        for n in range(users):
            user, _ = User.objects.get_or_create(username=f"bench-trader-{n}")
            for asset, amount in ((base, Decimal("1000000")), (quote, Decimal("10000000000"))):
                deposit_credit(user=user, asset=asset, amount=amount, txid=f"bench-{user.pk}-{asset.code}",
                               actor=operator, memo="benchmark funds")
            user_ids.append(user.pk)
        return base, quote, user_ids

    def _batch(self, rng, sequence, size, base, quote, user_ids) -> list:
        """Place the holds of ``size`` trades (not timed); return the batch to settle."""
        holds, settle, close = [], [], []
        for _ in range(size):
            buyer, seller = rng.sample(user_ids, 2)
            number = next(sequence)
            buy_ref, sell_ref = f"bench:{number}:buy", f"bench:{number}:sell"
            quantity = rng.randint(1, 5000) * LOT
            price = rng.randint(2_900_000, 3_100_000) * TICK
            notional = quantity * price
            buyer_is_maker = rng.random() < 0.5
            buyer_fee = fee_amount(received=quantity, rate=MAKER_FEE_RATE if buyer_is_maker else TAKER_FEE_RATE,
                                   precision=base.precision)
            seller_fee = fee_amount(received=notional, rate=TAKER_FEE_RATE if buyer_is_maker else MAKER_FEE_RATE,
                                    precision=quote.precision)
            holds += [
                HoldPlace(buy_ref, buyer, quote.pk, (quantity * price * Decimal("1.01")).quantize(Decimal("0.000001"))),
                HoldPlace(sell_ref, seller, base.pk, quantity),
            ]
            settle.append(TradeSettlement(
                reference=f"trade:BENCH:{number}", base_asset_id=base.pk, quote_asset_id=quote.pk,
                buyer_id=buyer, seller_id=seller, buyer_hold_reference=buy_ref, seller_hold_reference=sell_ref,
                quantity=quantity, notional=notional, buyer_fee=buyer_fee, seller_fee=seller_fee,
            ))
            close += [HoldRelease(buy_ref, close=True), HoldRelease(sell_ref, close=True)]
        with transaction.atomic():
            ledger_apply(holds)
        return settle + close
