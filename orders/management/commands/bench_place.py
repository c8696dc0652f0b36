"""``manage.py bench_place``: PostgreSQL's CPU per placed order, on one connection.

It places resting LIMIT buys for new funded traders with the statements the
web workers send (``entry.PLACE_SQL`` alone, ``entry.PLACE_MANY_SQL`` for
``--batch`` orders at a time), one after the other on one asyncpg
connection, and reports the CPU time that connection's PostgreSQL backend
used per order (``exchange.outbox.bench.process_cpu_s``: PostgreSQL must
run on this machine) and the time per order seen by the client. Only PostgreSQL is needed: run it
with the exchange stopped (on a data folder where it ran once, for its
markets), since a running market's matcher would sweep up the orders it
places and compete for the CPU.

``--batch 1`` sends ``PLACE_SQL``, as a web worker does for a lone
placement; ``--batch-function`` sends ``PLACE_MANY_SQL`` even for one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal as D

import psutil
from django.core.management.base import BaseCommand, CommandError

from exchange.core import aio
from exchange.models import Market
from exchange.outbox.bench import process_cpu_s
from matching.bench_feed import funded_traders
from orders import entry


def _backend_cpu_s(pid: int) -> float:
    try:
        return process_cpu_s(pid)
    except psutil.Error:
        raise CommandError("PostgreSQL's backend is not a process of this machine: its CPU cannot be read") from None


class Command(BaseCommand):
    help = "PostgreSQL CPU per placed order (the placing statements on one connection)."

    def add_arguments(self, parser):
        parser.add_argument("--market", default="BTC-USDT")
        parser.add_argument("--batch", type=int, default=1, help="Orders per statement.")
        parser.add_argument("--batch-function", action="store_true",
                            help="Send PLACE_MANY_SQL even for a batch of one.")
        parser.add_argument("--orders", type=int, default=2000)
        parser.add_argument("--traders", type=int, default=16)

    def handle(self, *args, market, batch, batch_function, orders, traders, **options):
        if batch < 1 or orders < batch:
            raise CommandError("--batch must be at least 1 and at most --orders")
        market = Market.objects.select_related("base", "quote").filter(symbol=market).first()
        if market is None:
            raise CommandError("No such market: start the exchange once on this data folder (it loads the demo "
                               "markets), or name one with --market.")
        users = [user.pk for user in funded_traders(market, traders, name=f"bench-place-{uuid.uuid4().hex[:8]}")]
        per_order_cpu_ms, per_order_ms, placed = asyncio.run(self._run(market, users, batch, batch_function, orders))
        self.stdout.write(f"batch={batch} orders={placed} postgres_cpu_ms_per_order={per_order_cpu_ms:.3f} "
                          f"client_ms_per_order={per_order_ms:.3f}")

    async def _run(self, market, users, batch, batch_function, orders):
        alone = batch == 1 and not batch_function

        def params(index: int) -> tuple:
            price = market.tick_size * 1000 + market.tick_size * (index % 50)  # far below any market: rests
            quantity = market.step_size * 10
            return (users[index % len(users)], market.pk, market.symbol, uuid.uuid4().hex, "BUY", "LIMIT", "GTC",
                    price, None, quantity, None, "CANCEL_TAKER", market.quote_id, price * quantity, D("0.001"),
                    D("0.002"), "127.0.0.1", None, f"BUY LIMIT {market.symbol}", "bench_place", uuid.uuid4().hex)

        async def place(connection, rows: list[tuple]) -> list:
            if alone:
                return [await connection.fetchrow(aio.numbered(entry.PLACE_SQL), *rows[0])]
            return await connection.fetch(aio.numbered(entry.PLACE_MANY_SQL), *[list(column) for column in zip(*rows)])

        pool = await aio.database_pool()
        try:
            async with pool.acquire() as connection:
                pid = await connection.fetchval("SELECT pg_backend_pid()")
                await place(connection, [params(index) for index in range(batch)])  # plans made, caches warm
                cpu_s, started, placed = _backend_cpu_s(pid), time.perf_counter(), 0
                while placed < orders:
                    rows = await place(connection, [params(placed + index) for index in range(batch)])
                    refused = [row["outcome"] for row in rows if row["outcome"] != entry.ACCEPTED]
                    if refused:
                        raise CommandError(f"a placement was refused: {refused[0]}")
                    placed += batch
                cpu_s, elapsed_s = _backend_cpu_s(pid) - cpu_s, time.perf_counter() - started
        finally:
            await aio.close()
        return cpu_s / placed * 1000, elapsed_s / placed * 1000, placed
