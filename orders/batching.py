"""Placements of one web worker sent to PostgreSQL together (``orders_order_place_many``).

A busy worker has many placements waiting for the database at once. Rather
than one statement, one round trip and one commit (a WAL flush) each, the
placements that arrive while the worker's earlier ones are in flight are sent
together as soon as one of those returns: at most ``MAX_IN_FLIGHT``
statements per worker are in the database, each carrying up to ``MAX_BATCH``
orders. A lone placement goes at once, alone (no waiting for company), so
batching costs latency nothing when the worker is idle and saves most of the
per-statement cost (executor start-up, constraint and trigger set-up, the
commit) when it is busy. The result of each order is exactly what placing it
alone would have given (see the migration of ``orders_order_place_many``).

If a batch fails as a whole (a database error), each of its orders is placed
again alone, so that one order's failure is that order's only.
"""

from __future__ import annotations

import asyncio
from collections import deque

from prometheus_client import Counter

from exchange.core import aio
from orders import entry

STATEMENTS = Counter("exchange_order_entry_statements", "Placement statements sent by this web worker")
PLACEMENTS = Counter("exchange_order_entry_placements", "Orders those statements carried")

MAX_BATCH = 64
MAX_IN_FLIGHT = 2


class PlacementBatcher:
    def __init__(self, *, max_batch: int = MAX_BATCH, max_in_flight: int = MAX_IN_FLIGHT):
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self.waiting: deque[tuple[tuple, asyncio.Future]] = deque()
        self.in_flight = 0
        self._tasks: set[asyncio.Task] = set()
        self.statements = 0  # sent so far, and the orders they carried (for tests and metrics)
        self.orders = 0

    async def place(self, params: tuple) -> dict:
        """The row of ``entry.PLACE_SQL`` for one order's parameters (``entry.Prepared.params``)."""
        future = asyncio.get_running_loop().create_future()
        self.waiting.append((params, future))
        self._dispatch()
        return await future

    def _dispatch(self) -> None:
        while self.waiting and self.in_flight < self.max_in_flight:
            count = min(len(self.waiting), self.max_batch)
            batch = [self.waiting.popleft() for _ in range(count)]
            self.in_flight += 1
            self.statements += 1
            self.orders += count
            STATEMENTS.inc()
            PLACEMENTS.inc(count)
            task = asyncio.ensure_future(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[tuple, asyncio.Future]]) -> None:
        try:
            if len(batch) == 1:
                await self._alone(*batch[0])
                return
            try:
                columns = [list(column) for column in zip(*(params for params, _ in batch))]
                rows = await aio.fetch_all(entry.PLACE_MANY_SQL, *columns)
            except Exception:  # noqa: BLE001 - each order again, alone: its failure is its own
                for params, future in batch:
                    await self._alone(params, future)
                return
            for (_, future), row in zip(batch, rows):
                if not future.done():
                    future.set_result(row)
        finally:
            self.in_flight -= 1
            self._dispatch()

    @staticmethod
    async def _alone(params: tuple, future: asyncio.Future) -> None:
        try:
            row = await aio.fetch_one(entry.PLACE_SQL, *params)
        except Exception as exc:  # noqa: BLE001 - the caller's request answers it
            if not future.done():
                future.set_exception(exc)
            return
        if not future.done():
            future.set_result(row)


def batcher() -> PlacementBatcher:
    """This event loop's batcher."""
    return aio.loop_local("placement_batcher", PlacementBatcher)
