"""One market's matcher: the only writer of its book, orders and trades.

Lifecycle (ARCHITECTURE.md, "Order flow and the single-writer protocol";
docs/TRADING.md, "Matcher process: restart and recovery"):

1. ``start()`` takes a PostgreSQL advisory lock for the market (a second
   matcher for the same market waits ``lock_wait_s`` and then refuses to
   start; a standby waits as long as it takes; the fenced sequence update in
   every batch is the second line of defence) and recovers.
2. ``recover()`` loads the book from its snapshot brought up to date, or
   rebuilds it from the database (matching/worker/snapshot.py), then applies
   what the database says is still to do (orders still PENDING, cancels still
   requested, amendments and status changes still REQUESTED, in the order
   they were made), then re-reads the stream entries this consumer read but
   never acknowledged. Anything already applied is skipped by the batch.
   ``run()`` then freezes what recovery built out of the collector's reach
   and tells its supervisor it is ready.
3. ``run_once()`` reads a batch with XREADGROUP and prepares it (engine,
   translation) while the batch before it commits on the writer thread, then
   lands that one (XACK, then the depth snapshot, live events and heartbeat)
   and hands this one to the writer (docs/TRADING.md, "Overlap"). Every
   ``sweep_after_s``, busy or idle, it sweeps the database for commands
   whose stream entry was lost (Redis down or flushed, an XADD that failed
   after its commit); every minute a forked child writes the book's snapshot.

If a batch fails to commit, the in-memory book is ahead of the database: the
matcher rebuilds it and the unacknowledged entries are read again. A failure
that is not transient may be a poisoned command: the batch's commands are
applied one at a time, and one that keeps failing is set aside
(matching/worker/poison.py). Killing a matcher at any instant therefore loses
nothing and applies nothing twice.
"""

from __future__ import annotations

import collections
import gc
import hashlib
import json
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone

import redis
from django.conf import settings
from django.db import connection
from django.utils import timezone

from exchange.core.fields import decimal_to_str
from exchange.core.redis import get_redis
from exchange.core.sql import server_cursor
from exchange.live.publish import MarketPublisher
from exchange.models import Market
from matching import stream
from matching.models import MarketStatusChange
from matching.units import MarketUnits
from matching.worker.batch import DEPTH_LEVELS, BatchApplier, BatchPlan, BatchResult, Command, to_micros
from matching.worker import poison, snapshot
from orders.models import OPEN_STATUSES, OrderAmendment, OrderStatus

logger = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 1.0
TRIM_EVERY_BATCHES = 20


@dataclass
class _InFlight:
    """A batch handed to the writer thread: committed (or failed) when ``future`` is done."""

    plan: BatchPlan
    commands: list[Command]
    entry_ids: list
    read_at: float  # perf_counter when its entries were read
    future: Future


def _write_batch(applier: BatchApplier, plan: BatchPlan) -> float:
    """The writer thread's job: commit one batch on the thread's own database
    connection. Returns when it committed (perf_counter)."""
    try:
        applier.write(plan)
    except BaseException:
        connection.close_if_unusable_or_obsolete()  # a broken connection is replaced at the next batch
        raise
    return time.perf_counter()


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _close_connection() -> None:
    connection.close()  # the calling thread's own


class MatcherAlreadyRunning(RuntimeError):
    pass


def parse_entry(entry_id, fields: dict) -> Command | None:
    """A stream entry as a Command; None for a malformed one (logged, acknowledged)."""
    try:
        kind = fields[b"c"].decode()
        row_id = int(fields[b"id"])
    except (KeyError, ValueError, UnicodeDecodeError):
        return None
    if kind not in stream.COMMAND_KINDS or row_id <= 0:
        return None
    return Command(kind, row_id, entry_id.decode() if isinstance(entry_id, bytes) else entry_id)


def database_backlog(market: Market, *, made_before=None, limit: int | None = None) -> list[Command]:
    """Commands the database says are still to apply, oldest first: one prepared
    statement (the sweep runs it every ``sweep_after_s`` under traffic, between
    two batches, so a burst arriving then waits for it)."""
    with server_cursor() as cursor:
        cursor.execute(_BACKLOG, {"market": market.id, "limit": limit,
                                  "before": made_before if made_before is not None else _NO_LIMIT_TIME})
        rows = cursor.fetchall()
    # Oldest first; within a kind at one instant, by id (the order each part came in).
    items = sorted((moment, position, kind, row_id) for position, (kind, row_id, moment) in enumerate(rows))
    return [Command(kind, row_id) for _, _, kind, row_id in items]


_NO_LIMIT_TIME = datetime(9999, 12, 31, tzinfo=dt_timezone.utc)


def _quoted(values) -> str:
    return ", ".join(f"'{value}'" for value in values)


# The statuses are written out (not parameters), so that even a generic plan
# proves the partial indexes' predicates: the unsequenced orders' and the
# cancel-requested orders' (orders/models.py).
_BACKLOG = f"""
    (SELECT '{stream.NEW}'::text, id, created_at FROM orders_order
     WHERE market_id = %(market)s AND status = '{OrderStatus.PENDING}' AND created_at < %(before)s
     ORDER BY id LIMIT %(limit)s)
    UNION ALL
    (SELECT '{stream.CANCEL}', id, cancel_requested_at FROM orders_order
     WHERE market_id = %(market)s AND cancel_requested_at IS NOT NULL AND status IN ({_quoted(OPEN_STATUSES)})
       AND cancel_requested_at < %(before)s
     ORDER BY id LIMIT %(limit)s)
    UNION ALL
    (SELECT '{stream.AMEND}', a.id, a.created_at FROM orders_orderamendment a
     JOIN orders_order o ON o.id = a.order_id
     WHERE o.market_id = %(market)s AND a.status = '{OrderAmendment.Status.REQUESTED}' AND a.created_at < %(before)s
     ORDER BY a.id LIMIT %(limit)s)
    UNION ALL
    (SELECT '{stream.STATUS}', id, created_at FROM matching_marketstatuschange
     WHERE market_id = %(market)s AND status = '{MarketStatusChange.Status.REQUESTED}' AND created_at < %(before)s
     ORDER BY id LIMIT %(limit)s)
"""


# How often a standby asks for its market's lock: what a take-over may add to
# PostgreSQL noticing the dead matcher's session, against one short statement
# per market ten times a second while all is well.
STANDBY_POLL_S = 0.1


def _lock_key(symbol: str) -> int:
    return int.from_bytes(hashlib.sha256(f"matcher:{symbol}".encode()).digest()[:8], "big", signed=True)


class Matcher:
    def __init__(self, symbol: str, *, batch_size: int = 500, block_ms: int = 50, sweep_after_s: float = 2.0):
        self.symbol = symbol
        self.batch_size = batch_size
        self.block_ms = block_ms
        # Whether the last read emptied the stream: only then is a command missing from
        # it lost rather than waiting further down the stream.
        self._caught_up = True
        self.sweep_after_s = sweep_after_s
        self.redis = get_redis()
        self.stream = stream.stream_key(symbol)
        # A stable consumer name: a restarted matcher finds the entries its
        # previous incarnation read but did not acknowledge.
        self.consumer = f"matcher-{symbol}"
        self.market: Market | None = None
        self.book = None
        self.applier: BatchApplier | None = None
        self._read_id = "0"
        self._last_sweep = 0.0
        self._last_heartbeat = 0.0
        self._batches_since_trim = 0
        self._last_acked_id: str | None = None
        # Commands set aside as poisoned: (kind, row id), skipped if read again.
        self._set_aside: set[tuple[str, int]] = set()
        self._set_aside_at: list[float] = []  # when, for the rate limit
        self.set_aside_after = poison.set_aside_after()
        self.snapshots: snapshot.SnapshotWriter | None = None
        self.locked = False  # holds the market's advisory lock
        # Reference prices for order entry, carried by the heartbeat (decimal strings).
        self._reference: dict[str, str | None] = {"last_price": None, "best_bid": None, "best_ask": None}
        self.pid = os.getpid()
        # The batch committing while the engine runs the next one (docs/TRADING.md, "Overlap"),
        # on one writer thread with its own database connection.
        self._inflight: _InFlight | None = None
        self._published_sequence = 0  # of the last batch published (committed)
        self._writer: ThreadPoolExecutor | None = None
        # Seconds from reading a batch's entries to its commit, of the latest batches.
        self.batch_latencies: collections.deque = collections.deque(maxlen=4096)

    # --------------------------------------------------------------- startup

    def start(self, *, lock_wait_s: float | None = 0.0) -> None:
        """Take the market's lock, waiting up to ``lock_wait_s`` for it (a
        predecessor that was just killed holds it until PostgreSQL notices its
        connection is gone, usually within milliseconds; None: as long as it
        takes, a standby), then recover.

        The wait polls ``pg_try_advisory_lock`` (every 20 ms, a standby every
        ``STANDBY_POLL_S``) rather than blocking in ``pg_advisory_lock``: a
        statement holds its snapshot while it runs, and a standby blocked for
        days would pin the database's xmin horizon, so that no row updated
        meanwhile could be pruned or vacuumed (the accounts, orders and outbox
        bloating without end, every lookup slower)."""
        deadline = None if lock_wait_s is None else time.monotonic() + lock_wait_s
        poll_s = STANDBY_POLL_S if lock_wait_s is None else 0.02
        with connection.cursor() as cursor:
            while True:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [_lock_key(self.symbol)])
                if cursor.fetchone()[0]:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    raise MatcherAlreadyRunning(f"another matcher holds {self.symbol}")
                time.sleep(poll_s)
        self.locked = True
        self.recover()

    def stop(self) -> None:
        try:
            self.land()
        except Exception:  # noqa: BLE001 - stopping anyway: not acknowledged, it is read again at the next start
            logger.exception("the batch in flight did not land", extra={"symbol": self.symbol})
        finally:
            if self._writer is not None:
                self._writer.submit(_close_connection).result()
                self._writer.shutdown()
                self._writer = None
        if self.snapshots is not None:
            # Not waited for: a child still writing finishes on its own (the
            # file is replaced atomically), and the lock is released now.
            self.snapshots.reap()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [_lock_key(self.symbol)])

    def recover(self) -> None:
        started = time.perf_counter()
        # A recovery during the run replaces a frozen book: give it back to the
        # collector (its orders form cycles), and freeze the new one after.
        frozen = gc.get_freeze_count() > 0
        if frozen:
            gc.unfreeze()
        self.market = Market.objects.select_related("base", "quote").get(symbol=self.symbol)
        self.units = MarketUnits.of(self.market)
        source = self._rebuild()
        if self.snapshots is None:
            self.snapshots = snapshot.SnapshotWriter(self.market)
        self.snapshots.after_recovery(self.book, from_database=source == "database")
        self.live = MarketPublisher(self.market, self.units)
        self._ensure_group()
        backlog = database_backlog(self.market)
        for start in range(0, len(backlog), self.batch_size):
            # A transient failure here propagates: the caller retries recovery
            # from scratch. A poisoned command is set aside (``_apply``).
            result = self._apply(backlog[start:start + self.batch_size])
            self._publish(result)
        self._read_id = "0"
        self._heartbeat(force=True)
        logger.info(
            "matcher recovered",
            extra={"symbol": self.symbol, "sequence": self.book.sequence, "open_orders": len(self.book),
                   "backlog": len(backlog), "book_from": source, "seconds": round(time.perf_counter() - started, 3)},
        )
        self._publish(None)
        if frozen:
            gc.freeze()

    def _rebuild(self) -> str:
        """The book from its snapshot brought up to date, or from the database
        (matching/worker/snapshot.py), and an applier on it. Returns the source."""
        self.book, source = snapshot.load_book(self.market)
        self.applier = BatchApplier(self.market, self.book)
        self.book_source = source
        self._published_sequence = self.book.sequence
        return source

    def _ensure_group(self) -> None:
        try:
            # From the start of the stream: entries already applied are skipped.
            self.redis.xgroup_create(self.stream, stream.GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        except redis.RedisError as exc:
            logger.warning("Redis unavailable during recovery; continuing from the database", extra={"error": str(exc)})

    # ------------------------------------------------------------------ loop

    def run_once(self) -> int:
        """Read one batch, run it through the engine while the batch before it
        commits, then land that one (acknowledge, publish) and hand this one to
        the writer. Returns how many stream entries it handled."""
        if self._read_id == "0":
            # Re-reading our unacknowledged entries would return the batch in flight again.
            self.land()
        try:
            # Never wait for new entries while a batch is in flight: it lands first.
            block = None if self._read_id == "0" or self._inflight is not None else self.block_ms
            response = self.redis.xreadgroup(
                stream.GROUP, self.consumer, {self.stream: self._read_id}, count=self.batch_size, block=block)
            if block is not None and response and len(response[0][1]) < self.batch_size:
                # A wait ends at the first new entry: the rest of a burst (a pipeline
                # of XADDs, several web workers at once) arrives just behind it. Take
                # it into this batch rather than leave it to wait a whole batch.
                more = self.redis.xreadgroup(stream.GROUP, self.consumer, {self.stream: ">"},
                                             count=self.batch_size - len(response[0][1]))
                if more:
                    response[0][1].extend(more[0][1])
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            logger.warning("command stream or group vanished (Redis flushed?); recovering from the database",
                           extra={"symbol": self.symbol})
            self.land()
            self.recover()
            return 0
        except redis.RedisError as exc:
            logger.warning("Redis unavailable; sweeping the database", extra={"symbol": self.symbol, "error": str(exc)})
            self.land()
            self._sweep(force=True)
            time.sleep(0.5)
            return 0
        read_at = time.perf_counter()
        entries = response[0][1] if response else []
        self._caught_up = len(entries) < self.batch_size
        if not entries:
            if self._inflight is not None:
                self.land()
                return 0
            if self._read_id == "0":
                self._read_id = ">"  # our pending entries are done; now new ones
            else:
                self._sweep()
            self.live.flush_ticker()
            self._heartbeat()
            self.snapshots.tick(self.book)
            return 0
        commands = []
        for entry_id, fields in entries:
            command = parse_entry(entry_id, fields)
            if command is None:
                logger.error("malformed command entry acknowledged and dropped",
                             extra={"symbol": self.symbol, "entry_id": str(entry_id)})
            else:
                commands.append(command)
        commands = self._not_set_aside(commands)
        ids = [entry_id for entry_id, _ in entries]
        if ((self._inflight is not None and (self._inflight.future.done() or self._caught_up))
                or any(command.kind == "status" for command in commands)):
            # Overlap only pays while the matcher is behind (a full read): otherwise land
            # the batch in flight first, so that its messages go out before this batch's
            # engine run, and this batch's clock starts after it. And a market status
            # change is applied alone in time: nothing in flight while it changes the
            # market everyone reads.
            if not self.land():
                return len(entries)
        try:
            plan = self.applier.prepare(commands, after=self._inflight.plan if self._inflight else None)
        except Exception as exc:
            # The batch in flight does not depend on this one: land it, then
            # handle this failure as a batch that failed alone.
            if self.land():
                self._publish(self._failed(commands, exc))
                self._ack(ids)
            return len(entries)
        if not self.land():
            return len(entries)  # the book was rebuilt: this plan is void, its entries are read again
        if plan.writes:
            self._ensure_writer()
            self._inflight = _InFlight(plan, commands, ids, read_at,
                                       self._writer.submit(_write_batch, self.applier, plan))
        else:
            self._ack(ids)
            self._publish(plan.result)
        # On a timer, not only when idle: under steady traffic a lost XADD would
        # otherwise leave its command unapplied for as long as the traffic lasts.
        if self._sweep_due():
            self.land()
            self._sweep()
        self._heartbeat()
        if self.snapshots.due():
            self.land()  # a snapshot is of the book as committed
            self.snapshots.tick(self.book)
        return len(entries)

    def backend_pids(self) -> list[int]:
        """The PostgreSQL backends of this matcher's two connections (its own, its writer's)."""
        self._ensure_writer()
        return [_backend_pid(), self._writer.submit(_backend_pid).result()]

    def _ensure_writer(self) -> None:
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"writer-{self.symbol}")

    def land(self) -> bool:
        """Wait for the batch in flight (if any) to commit, then acknowledge and
        publish it. False if it failed: the book was rebuilt, so whatever was
        prepared after it is void (its entries, unacknowledged, are read again).
        A transient failure propagates, as for a batch applied in place."""
        inflight, self._inflight = self._inflight, None
        if inflight is None:
            return True
        try:
            committed_at = inflight.future.result()
        except Exception as exc:
            self._publish(self._failed(inflight.commands, exc))
            self._ack(inflight.entry_ids)
            return False
        self.batch_latencies.append(committed_at - inflight.read_at)
        self._ack(inflight.entry_ids)
        self._publish(inflight.plan.result)
        return True

    def _ack(self, ids: list) -> None:
        self.redis.xack(self.stream, stream.GROUP, *ids)
        self._last_acked_id = ids[-1].decode() if isinstance(ids[-1], bytes) else ids[-1]
        self._trim()

    def _apply(self, commands: list[Command]) -> BatchResult | None:
        """Apply ``commands`` in one batch, in place (nothing in flight): recovery
        and the sweep. A failure is handled by ``_failed``."""
        assert self._inflight is None, "a batch applied in place while another is in flight"
        commands = self._not_set_aside(commands)
        if not commands:
            return None
        try:
            return self.applier.apply(commands)
        except Exception as exc:
            return self._failed(commands, exc)

    def _not_set_aside(self, commands: list[Command]) -> list[Command]:
        """``commands`` but those this process set aside as poisoned (skipped if read again)."""
        return [c for c in commands if (c.kind, c.row_id) not in self._set_aside]

    def _failed(self, commands: list[Command], exc: Exception) -> BatchResult | None:
        """``commands`` failed as one batch. The book (now maybe ahead of the
        database) is rebuilt; a transient failure (database or Redis away, a
        sequence conflict) propagates, any other one means a command may be
        poisoned: the commands are applied one by one, each alone batch
        published as it commits, and one that fails ``set_aside_after()`` times
        is set aside (matching/worker/poison.py)."""
        self._after_failure(exc)
        if poison.is_transient(exc) or self.set_aside_after <= 0:
            raise exc
        if len(commands) == 1:
            return self._apply_alone(commands[0], failures=1, error=exc)
        logger.warning("applying the failed batch's commands one at a time",
                       extra={"symbol": self.symbol, "commands": len(commands)})
        for command in commands:
            self._publish(self._apply_alone(command))
        return None

    def _after_failure(self, exc: BaseException) -> None:
        # The book may be ahead of the database now; only a rebuild is safe.
        logger.error("batch failed; rebuilding the book from the database", exc_info=exc,
                     extra={"symbol": self.symbol})
        # What this consumer read and did not acknowledge is read again, even if the
        # rebuild fails now (the database away): the next batch's fence then fails
        # too, and its rebuild runs again.
        self._read_id = "0"
        self._rebuild()

    def _apply_alone(self, command: Command, *, failures: int = 0, error: BaseException | None = None):
        while failures < self.set_aside_after:
            try:
                return self.applier.apply([command])
            except Exception as exc:
                self._after_failure(exc)
                if poison.is_transient(exc):
                    raise
                failures, error = failures + 1, exc
        now = time.monotonic()
        recent = [moment for moment in self._set_aside_at if now - moment < 60.0]
        if (len(recent) >= poison.MAX_SET_ASIDE_PER_MINUTE
                or poison.rejected_recently(self.market) >= poison.MAX_REJECTED_PER_10_MINUTES):
            logger.error("too many commands failing: not setting more aside; stopping instead",
                         extra={"symbol": self.symbol, "set_aside_last_minute": len(recent)})
            raise error
        self._set_aside_at = [*recent, now]
        self._set_aside.add((command.kind, command.row_id))
        try:
            done = poison.set_aside(market=self.market, book=self.book, command=command, error=error, tries=failures)
        except Exception:
            # Kept aside in this process anyway: the market trades on; the
            # next incarnation will try (and set aside) again.
            logger.exception("setting a poisoned command aside failed", extra={
                "symbol": self.symbol, "kind": command.kind, "row_id": command.row_id})
        else:
            if done["order_ids"]:
                self.live.publish_orders(done["user_id"], done["order_ids"])
        return None

    def _sweep_due(self) -> bool:
        # A matcher behind its stream finds there what it has not read yet.
        return time.monotonic() - self._last_sweep >= self.sweep_after_s and self._caught_up

    def _sweep(self, force: bool = False) -> None:
        """Apply commands the database holds but the stream lost (Redis down or flushed)."""
        if not force and not self._sweep_due():
            return
        self._last_sweep = time.monotonic()
        backlog = database_backlog(
            self.market, made_before=timezone.now() - timedelta(seconds=self.sweep_after_s), limit=self.batch_size)
        if backlog:
            logger.warning("sweep found commands missing from the stream",
                           extra={"symbol": self.symbol, "count": len(backlog)})
            result = self._apply(backlog[: self.batch_size])
            self._publish(result)

    def _trim(self) -> None:
        """Drop acknowledged entries: every entry before the last acknowledged one
        is applied and acknowledged (we read in order and ack after commit)."""
        self._batches_since_trim += 1
        if self._batches_since_trim >= TRIM_EVERY_BATCHES and self._last_acked_id:
            self._batches_since_trim = 0
            self.redis.xtrim(self.stream, minid=self._last_acked_id, approximate=True)

    # ------------------------------------------------------------ publishing

    def _heartbeat(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_heartbeat >= HEARTBEAT_EVERY_S:
            self._last_heartbeat = now
            try:
                stream.heartbeat_write(self.symbol, sequence=self._published_sequence, pid=self.pid, backlog=0,
                                       **self._reference)
            except redis.RedisError:
                pass

    def _publish(self, result: BatchResult | None) -> None:
        """Depth snapshot, heartbeat and live messages (exchange/live), after commit.
        Losing them is harmless: clients see a sequence gap and resync from the
        snapshot, and order entry reads the reference prices again at the next batch.

        The depth key is written first and the WebSocket messages only once it
        is: a subscriber joins its group before it reads the snapshot, so the
        snapshot it reads is never older than the first delta it receives
        (docs/LIVE.md, "Snapshots and sequences")."""
        units = self.units
        if result is not None:  # the book as the batch left it: the engine may be further on
            (bids, asks), sequence = result.depth, result.sequence
            status, last_price = result.book_status, result.last_trade_price_ticks
        else:
            assert self._inflight is None, "the book is ahead of what was committed"
            (bids, asks), sequence = self.book.depth(DEPTH_LEVELS), self.book.sequence
            status, last_price = self.book.status, self.book.last_trade_price_ticks
        self._published_sequence = sequence
        depth = {
            "symbol": self.symbol,
            "sequence": sequence,
            "status": status,
            "bids": [[decimal_to_str(units.ticks_to_price(p)), decimal_to_str(units.lots_to_quantity(q))] for p, q in bids],
            "asks": [[decimal_to_str(units.ticks_to_price(p)), decimal_to_str(units.lots_to_quantity(q))] for p, q in asks],
            "timestamp": to_micros(timezone.now()),
        }
        self._reference = {
            "last_price": None if last_price is None else decimal_to_str(units.ticks_to_price(last_price)),
            "best_bid": depth["bids"][0][0] if depth["bids"] else None,
            "best_ask": depth["asks"][0][0] if depth["asks"] else None,
        }
        try:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(stream.depth_key(self.symbol), json.dumps(depth))
            stream.heartbeat_write(self.symbol, sequence=sequence, pid=self.pid, backlog=0,
                                   client=pipe, **self._reference)
            pipe.execute()
        except redis.RedisError as exc:
            logger.warning("publishing failed", extra={"symbol": self.symbol, "error": str(exc)})
            return
        self._last_heartbeat = time.monotonic()
        self.live.publish(result, best_bid=self._reference["best_bid"], best_ask=self._reference["best_ask"])

    # ------------------------------------------------------------------ run

    def run(self, should_stop, *, on_ready=None, lock_wait_s: float | None = 0.0) -> None:
        """Loop until ``should_stop()``; a failing batch is retried after a rebuild,
        and repeated failures end the process for its supervisor to restart.
        ``on_ready()`` is called once recovery is done (the supervisor's sign
        that this start succeeded)."""
        self.start(lock_wait_s=lock_wait_s)
        # What recovery built (the book: one object per resting order) lives as
        # long as the process: out of the collector's reach, a full collection
        # no longer walks it (docs/TRADING.md, "Matcher process").
        gc.freeze()
        if on_ready is not None:
            on_ready()
        failures = 0
        try:
            while not should_stop():
                try:
                    self.run_once()
                    failures = 0
                except Exception:
                    failures += 1
                    if failures >= settings.MATCHER_MAX_CONSECUTIVE_FAILURES:
                        raise
                    time.sleep(min(5.0, 0.2 * 2 ** failures))
        finally:
            self.stop()

