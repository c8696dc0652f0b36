"""What ``manage.py bench_outbox`` measures with (docs/BENCHMARKS.md, "Outbox relay").

- CPU time, not only wall time: on a machine shared with other jobs CPU
  time per event moves far less than a rate. ``server_cpu_s`` sums the whole
  PostgreSQL server (postmaster, backends, autovacuum, WAL writer,
  checkpointer: the postmaster's own time, the time of the children it
  reaped, and its live children's); ``process_cpu_s`` one process (and the
  children it reaped). Both read /proc through psutil, so the server must run
  on this machine, as the embedded one does.
- ``LoadWriter``: emitters shaped like the platform's at a target rate, in
  threads of this process: placements (``order.accepted`` and
  ``balance.changed`` in one transaction, written by ``outbox_emit_many`` as
  ``orders.services`` does) and matcher batches (one ``INSERT ... SELECT``
  building the payloads in PostgreSQL, as ``matching/worker/batch.py`` does).
  Each transaction carries a number in its payloads; its commit time is
  recorded after COMMIT returns.
- ``LatencyReader``: reads the bench streams as a consumer would and measures,
  per event, the time from its transaction's commit to its arrival on the bus.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from django.db import connection, transaction

from exchange.outbox.models import OutboxEvent

TABLE = OutboxEvent._meta.db_table


def postgres_server_pid() -> int | None:
    """The postmaster's pid if the server runs on this machine and its data directory is readable."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW data_directory")
        data_directory = cursor.fetchone()[0]
    try:
        pid = int(Path(data_directory, "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if psutil.pid_exists(pid) else None


def backend_pids(application_name: str) -> list[int]:
    """The server processes serving this database's connections named ``application_name``."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()",
                       [application_name])
        return [pid for (pid,) in cursor.fetchall()]


def backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and of the children it has reaped."""
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system + times.children_user + times.children_system


def processes_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of live processes (those gone meanwhile count as 0)."""
    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def server_cpu_s(postmaster_pid: int) -> float:
    """CPU seconds used so far by the PostgreSQL server: the postmaster, the
    children it reaped (their time lands in its counters) and its live children."""
    total = process_cpu_s(postmaster_pid)
    for child in psutil.Process(postmaster_pid).children():
        try:
            times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue  # reaped meanwhile: counted by the postmaster from now on
        total += times.user + times.system
    return total


class CpuClock:
    """CPU seconds of a set of named sources between ``start()`` and ``stop()``."""

    def __init__(self, **sources):
        self.sources = {name: source for name, source in sources.items() if source is not None}
        self.spent: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        return {name: source() for name, source in self.sources.items()}

    def start(self) -> "CpuClock":
        self._started = self._read()
        return self

    def stop(self) -> dict[str, float]:
        now = self._read()
        self.spent = {name: now[name] - self._started[name] for name in now}
        return self.spent


# ---------------------------------------------------------------------------
# Load: emitters at a target rate, and a reader measuring commit -> bus latency

_BENCH_TX = re.compile(rb'"bench_tx" ?: ?(\d+)')  # json_build_object writes "key" : value

# A placement's two events (``order.accepted``, ``balance.changed``), built by
# PostgreSQL so that the emitters stay cheap enough to load the relay.
_PLACEMENT = f"""
    INSERT INTO {TABLE} (topic, key, event_type, version, payload)
    VALUES ('order.events', 'BENCH' || %s::int || '-USDT', 'order.accepted', 1, json_build_object(
                'bench_tx', %s::bigint, 'order_id', %s::bigint, 'user_id', %s::int, 'side', 'BUY', 'type', 'LIMIT',
                'price', '65000.12', 'quantity', '0.015', 'hold_amount', '975.0018', 'status', 'PENDING',
                'created_at', now())),
           ('balance.events', %s::int::text, 'balance.changed', 1, json_build_object(
                'bench_tx', %s::bigint, 'user_id', %s::int, 'asset', 'USDT', 'available', '1000', 'held', '975.0018'))
"""

# A matcher-shaped batch: ``order.updated`` events built by PostgreSQL.
_MATCHER_BATCH = f"""
    INSERT INTO {TABLE} (topic, key, event_type, version, payload, sequence)
    SELECT 'order.events', 'BENCH' || mod(g, %s) || '-USDT', 'order.updated', 1, json_build_object(
        'bench_tx', %s::bigint, 'order_id', 10000000 + g, 'client_order_id', 'bench-' || g,
        'user_id', 1000 + mod(g, 200),
        'market', 'BENCH' || mod(g, %s) || '-USDT', 'side', 'BUY', 'type', 'LIMIT', 'status', 'PARTIALLY_FILLED',
        'status_reason', '', 'price', '65000.12', 'stop_price', NULL, 'quantity', '0.015', 'quote_quantity', NULL,
        'filled_quantity', '0.005', 'filled_notional', '325.0006', 'average_price', '65000.12',
        'fee_total', '0.0000075', 'accepted_sequence', g, 'last_sequence', g + 1, 'updated_at', now()), g
    FROM generate_series(1, %s) AS g
"""


@dataclass
class LoadWriter:
    """Writes about ``rate`` events/s for ``seconds``: ``placement_share`` of
    them as 2-event placements from ``placement_threads`` threads, the rest
    as matcher batches of ``matcher_batch`` events from one thread."""

    rate: float
    seconds: float
    placement_share: float = 0.375
    matcher_batch: int = 500
    placement_threads: int = 3
    keys: int = 20
    commits: dict[int, float] = field(default_factory=dict)  # transaction number -> commit time
    events: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_tx: int = 0

    def _tx(self, count: int) -> int:
        with self._lock:
            self._next_tx += 1
            self.events += count
            return self._next_tx

    def _committed(self, tx: int) -> None:
        self.commits[tx] = time.time()

    def _paced(self, interval_s: float, write) -> None:
        """Call ``write`` every ``interval_s`` (open loop: a late writer catches up, it does not skip)."""
        try:
            with connection.cursor() as cursor:  # the emitters' commits need not wait for the disk here
                cursor.execute("SET synchronous_commit = off")
            deadline = time.monotonic() + self.seconds
            due = time.monotonic()
            while due < deadline:
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                write()
                due += interval_s
        finally:
            connection.close()

    def _placement(self) -> None:
        tx = self._tx(2)
        with transaction.atomic(), connection.cursor() as cursor:
            user = tx % 5000
            cursor.execute(_PLACEMENT, [tx % self.keys, tx, tx, user, user, tx, user])
        self._committed(tx)

    def _matcher(self) -> None:
        tx = self._tx(self.matcher_batch)
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_MATCHER_BATCH, [self.keys, tx, self.keys, self.matcher_batch])
        self._committed(tx)

    def threads(self) -> list[threading.Thread]:
        placement_rate = self.rate * self.placement_share / 2  # transactions/s
        matcher_rate = self.rate * (1 - self.placement_share) / self.matcher_batch
        threads = []
        if placement_rate > 0:
            interval = self.placement_threads / placement_rate
            threads += [threading.Thread(target=self._paced, args=(interval, self._placement), daemon=True)
                        for _ in range(self.placement_threads)]
        if matcher_rate > 0:
            threads.append(threading.Thread(target=self._paced, args=(1 / matcher_rate, self._matcher), daemon=True))
        return threads


class LatencyReader(threading.Thread):
    """Reads ``streams`` from their start and records, for every bench event,
    its arrival on the bus minus its transaction's commit time (ms). The
    arrival is the time in the stream entry's id (Redis's clock when the XADD
    ran, in ms; the same machine's clock as the writers'), so the reader's own
    delays do not count."""

    def __init__(self, client, streams: list[str], commits: dict[int, float]):
        super().__init__(daemon=True)
        self.client, self.commits = client, commits
        self.positions = {stream: "0-0" for stream in streams}
        self.latencies_ms: list[float] = []
        self.received = 0
        self._unmatched: list[tuple[int, float]] = []
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            replies = self.client.xread(self.positions, count=5000, block=100)
            for stream, entries in replies or []:
                stream = stream.decode() if isinstance(stream, bytes) else stream
                self.positions[stream] = entries[-1][0]
                for entry_id, fields in entries:
                    match = _BENCH_TX.search(fields[b"event"])
                    if match:
                        arrived = int(entry_id.split(b"-")[0]) / 1000
                        self._unmatched.append((int(match.group(1)), arrived))
                self.received += len(entries)
            self._match()

    def _match(self) -> None:
        waiting = []
        for tx, arrived in self._unmatched:
            committed = self.commits.get(tx)
            if committed is None:  # read before its writer recorded the commit: the race is microseconds
                waiting.append((tx, arrived))
            else:
                self.latencies_ms.append(max(0.0, arrived - committed) * 1000)
        self._unmatched = waiting

    def stop(self) -> None:
        self._done.set()
        self.join(5)
        self._match()


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
