"""A signed HTTP load generator for order entry (``manage.py bench_api``), and CPU accounting.

The client is asyncio on uvloop with raw HTTP/1.1 over keep-alive connections:
it writes each request's bytes and reads the status line, headers and body,
so that one client process can offer a few thousand signed orders per second
while costing the machine little (it runs on the same two cores as the
exchange). Each request is signed anew (``exchange.apikeys.signing``).

Two modes:

- closed loop (``rate=None``): every connection sends its next request as soon
  as the previous one is answered;
- open loop (``rate``): requests are due at a fixed rate, each on the next free
  connection; a request's latency counts from when it was due, not from when a
  connection was free to send it, so a server that falls behind shows it
  (no coordinated omission).

``ProcessCpu`` reads the CPU time (user + system) of the processes of each
kind (web workers, matchers, PostgreSQL, Redis, the outbox relay, Celery, this client) from
/proc before and after a run.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import psutil

from exchange.apikeys.signing import signed_headers

Request = tuple[str, str, str, bytes]  # (method, path, query, body)


@dataclass
class Result:
    # Per request, in the order of the answers: its latency, when it was due (from the start), its status.
    latencies_s: list[float] = field(default_factory=list)
    due_s: list[float] = field(default_factory=list)
    status_list: list[int] = field(default_factory=list)
    bodies: list[dict] = field(default_factory=list)  # kept when asked (to cancel what was placed)
    elapsed_s: float = 0.0

    @property
    def statuses(self) -> Counter:
        return Counter(self.status_list)

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies_s)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000


class _Connection:
    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def send(self, method: str, path: str, query: str, body: bytes, headers: dict) -> tuple[int, bytes]:
        target = path + ("?" + query if query else "")
        head = [f"{method} {target} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{name}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        payload = await self.reader.readexactly(length) if length else b""
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def run_load(*, host: str, port: int, connections: int, requests: list[Request], keys: list[tuple[str, str]],
                   rate: float | None, keep_bodies: bool = False) -> Result:
    """Send ``requests`` (request i signed with ``keys[i % len(keys)]``) over ``connections``
    keep-alive connections, closed loop or at ``rate`` per second."""
    pool = [_Connection(host, port) for _ in range(connections)]
    await asyncio.gather(*(connection.open() for connection in pool))
    free: asyncio.Queue[_Connection] = asyncio.Queue()
    for connection in pool:
        free.put_nowait(connection)
    result = Result()
    if keep_bodies:
        result.bodies = [None] * len(requests)  # type: ignore[list-item]

    async def one(index: int, due: float) -> None:
        connection = await free.get()
        method, path, query, body = requests[index]
        key_id, secret = keys[index % len(keys)]
        headers = signed_headers(key_id, secret, method, path, query or None, body)
        headers["Content-Type"] = "application/json"
        try:
            status, payload = await connection.send(method, path, query, body, headers)
        finally:
            free.put_nowait(connection)
        result.latencies_s.append(time.perf_counter() - due)
        result.due_s.append(due - started)
        result.status_list.append(status)
        if keep_bodies:
            result.bodies[index] = json.loads(payload) if payload else None

    started = time.perf_counter()
    tasks = []
    if rate is None:
        async def worker(indexes):
            for index in indexes:
                await one(index, time.perf_counter())
        tasks = [asyncio.ensure_future(worker(range(i, len(requests), connections))) for i in range(connections)]
    else:
        interval = 1.0 / rate
        for index in range(len(requests)):
            due = started + index * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(index, due)))
    await asyncio.gather(*tasks)
    result.elapsed_s = time.perf_counter() - started
    for connection in pool:
        connection.close()
    return result


def run(**kwargs) -> Result:
    """``run_load`` on uvloop, with this process's cyclic garbage collector off meanwhile: in
    open loop a collection of the client's own heap (the requests, the results) delays the
    requests due during it, and their latency counts from when they were due, so the
    client's pauses would be reported as the server's (a 50 ms one was seen)."""
    try:
        import uvloop
    except ImportError:
        uvloop = None
    gc.collect()
    gc.disable()
    try:
        return uvloop.run(run_load(**kwargs)) if uvloop else asyncio.run(run_load(**kwargs))
    finally:
        gc.enable()


# --------------------------------------------------------------------- CPU


def _processes() -> dict[int, tuple[int, str]]:
    """{pid: (parent pid, command line)} of every process."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open(f"/proc/{entry}/stat") as handle:
                parent = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        found[int(entry)] = (parent, cmdline)
    return found


class ProcessCpu:
    """CPU seconds used by each kind of process of one exchange between ``start()`` and ``stop()``.

    A kind is the processes whose command line matches, and their descendants
    (PostgreSQL's backends, Celery's pool, each web worker); PostgreSQL and Redis
    are the servers whose command line names ``data_dir`` (the embedded ones of
    this exchange, not those of another run on the same machine)."""

    def __init__(self, data_dir: str, backends: Callable[[], dict[int, str]] | None = None):
        # ``backends()``: {PostgreSQL backend pid: the client's application_name},
        # to split PostgreSQL's CPU by who asked for the work.
        self.backends = backends or dict
        self.data_dir = os.path.realpath(data_dir)
        self.roots: dict[str, Callable[[str], bool]] = {
            "web": lambda cmd: "exchange.server" in cmd,
            "matcher": lambda cmd: "run_matcher" in cmd,
            "postgres": lambda cmd: "postgres" in cmd and data_dir in cmd,
            "redis": lambda cmd: "redis-server" in cmd and data_dir in cmd,
            "relay": lambda cmd: "run_outbox_relay" in cmd,
            "celery": lambda cmd: "celery" in cmd and "-A exchange" in cmd,
        }

    def _ours(self, pid: int, kind: str) -> bool:
        """Whether the process belongs to this exchange, not to another one on the machine:
        the servers name the data folder; the exchange's own processes have it in their
        environment (EXCHANGE_DATA_DIR), or use their checkout's ``var`` by default."""
        if kind in ("postgres", "redis"):
            return True
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environment = dict(item.partition(b"=")[::2] for item in handle.read().split(b"\0"))
            data_dir = environment.get(b"EXCHANGE_DATA_DIR", b"").decode() or os.path.join(
                os.readlink(f"/proc/{pid}/cwd"), "var")
        except OSError:
            return False
        return os.path.realpath(data_dir) == self.data_dir

    def _by_kind(self, processes: dict[int, tuple[int, str]] | None = None) -> dict[int, str]:
        processes = _processes() if processes is None else processes
        kinds: dict[int, str] = {}
        for pid, (_, cmd) in processes.items():
            kind = next((name for name, match in self.roots.items() if match(cmd)), None)
            if kind is not None and self._ours(pid, kind):
                kinds[pid] = kind
        changed = True
        while changed:  # descendants take their ancestor's kind
            changed = False
            for pid, (parent, _) in processes.items():
                if pid not in kinds and parent in kinds:
                    kinds[pid] = kinds[parent]
                    changed = True
        kinds.pop(os.getpid(), None)
        return kinds

    def start(self) -> None:
        processes = _processes()
        self.before = {pid: (kind, *_cpu_s(pid), processes.get(pid, (0, ""))[0])
                       for pid, kind in self._by_kind(processes).items()}
        self.self_before = time.process_time()

    def stop(self) -> dict[str, float]:
        """CPU seconds per kind; ``self.postgres_by_client`` splits PostgreSQL's by client.

        A process that ends during the run still counts: its parent reaps it, and its CPU
        lands in the parent's counters of reaped children, counted here for every process
        (PostgreSQL's backends of short-lived connections, reaped by the postmaster). What
        such a process had used before ``start()`` is taken off again."""
        used: Counter = Counter()
        by_client: Counter = Counter()
        backends = self.backends()
        now = self._by_kind()
        for pid, kind in now.items():
            own, reaped = _cpu_s(pid)
            _, own_before, reaped_before, _ = self.before.get(pid, (kind, 0.0, 0.0, 0))
            used[kind] += max(0.0, own - own_before)
            if kind == "postgres":
                by_client[backends.get(pid) or "its own processes"] += max(0.0, own - own_before)
            used[kind] += max(0.0, reaped - reaped_before)
            if kind == "postgres":
                by_client["backends that ended"] += max(0.0, reaped - reaped_before)
        for pid, (kind, own_before, _, parent) in self.before.items():
            if pid not in now and parent in self.before:
                # Ended, and reaped by one of ours: that parent's counter holds all its CPU.
                used[kind] -= own_before
                if kind == "postgres":
                    by_client["backends that ended"] -= own_before
        used["client"] = time.process_time() - self.self_before
        self.postgres_by_client = {client: max(0.0, seconds) for client, seconds in by_client.items()}
        return {kind: max(0.0, seconds) for kind, seconds in used.items()}


def _cpu_s(pid: int) -> tuple[float, float]:
    """(own, reaped children's) user + system CPU seconds of a process; (0, 0) if it is gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return 0.0, 0.0
    return times.user + times.system, times.children_user + times.children_system


def new_client_order_id() -> str:
    return uuid.uuid4().hex
