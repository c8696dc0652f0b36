"""``manage.py run_matchers``: one matcher process per market, restarted when it dies.

The supervisor sleeps in ``select()`` on each child's pidfd (readable when
the child exits; Linux 5.3+), its ready pipe, and a SIGCHLD wake-up pipe (for
kernels without pidfds), so it learns of an exit at once (no poll interval):

- a matcher that exits **after it reported ready** (its recovery finished:
  a SIGKILL, the OOM killer, a rolling restart, a bug in the loop) is
  restarted at once, however often that happens;
- a matcher that exits **during its own startup** (before ready: the
  database unreachable, recovery failing) is restarted after a delay that
  doubles at each consecutive such exit, from ``BACKOFF_FIRST_S`` up to
  ``BACKOFF_MAX_S``; the first ready report resets it.

Markets are re-read every ``MARKETS_EVERY_S``, so a market the operator adds
gets a matcher within about a second, without a restart of the supervisor.
Each exit is logged with its status and the delay chosen.
"""

from __future__ import annotations

import fcntl
import logging
import os
import select
import signal
import sys
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from exchange import processes
from exchange.models import Market
from matching.management.commands.run_matcher import READY_FD_ENV

logger = logging.getLogger(__name__)

MARKETS_EVERY_S = 1.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0


@dataclass
class Slot:
    """One market's matcher as the supervisor sees it."""

    symbol: str
    child: processes.Child | None = None
    ready_fd: int | None = None  # read end of the child's ready pipe
    pid_fd: int | None = None  # readable once the child has exited
    ready: bool = False
    startup_failures: int = 0  # consecutive exits before ready
    not_before: float = 0.0  # no start before this (monotonic)
    restarts: int = 0


def startup_backoff(failures: int, *, first_s: float = BACKOFF_FIRST_S, max_s: float = BACKOFF_MAX_S) -> float:
    """Delay before the next start after ``failures`` consecutive startup failures."""
    if failures <= 0:
        return 0.0
    return min(max_s, first_s * 2 ** (failures - 1))


class Supervisor:
    """Runs ``spawn(symbol, ready_fd)`` for every symbol ``symbols()`` lists.

    ``spawn`` must start a process that writes one byte to ``ready_fd`` when
    it is ready (then the fd may be closed) and return its ``processes.Child``.
    """

    def __init__(self, symbols, spawn, *, markets_every_s: float = MARKETS_EVERY_S,
                 backoff_first_s: float = BACKOFF_FIRST_S, backoff_max_s: float = BACKOFF_MAX_S):
        self.symbols = symbols
        self.spawn = spawn
        self.markets_every_s = markets_every_s
        self.backoff_first_s = backoff_first_s
        self.backoff_max_s = backoff_max_s
        self.slots: dict[str, Slot] = {}
        self._next_markets = 0.0
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)

    # ------------------------------------------------------------- signals

    def install_signals(self) -> None:
        """Wake ``select()`` when a child exits (main thread only)."""
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:
            pass

    # ---------------------------------------------------------------- loop

    def step(self, timeout_s: float = 1.0) -> None:
        """Wait up to ``timeout_s`` for something to happen, then act on it."""
        now = time.monotonic()
        deadlines = [self._next_markets] + [
            slot.not_before for slot in self.slots.values() if slot.child is None]
        wait = max(0.0, min([now + timeout_s, *deadlines]) - now)
        fds = [self._wake_r]
        for slot in self.slots.values():
            fds.extend(fd for fd in (slot.ready_fd, slot.pid_fd) if fd is not None)
        try:
            readable, _, _ = select.select(fds, [], [], wait)
        except InterruptedError:  # pragma: no cover - PEP 475 retries select
            readable = []
        if self._wake_r in readable:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except BlockingIOError:
                pass
        for slot in self.slots.values():
            if slot.ready_fd is not None and slot.ready_fd in readable:
                self._read_ready(slot)
        self._reap()
        now = time.monotonic()
        if now >= self._next_markets:
            self._next_markets = now + self.markets_every_s
            try:
                symbols = self.symbols()
            except Exception as exc:  # the database away: keep supervising what runs
                logger.warning("could not read the markets", extra={"error": str(exc)})
                symbols = []
            for symbol in symbols:
                self.slots.setdefault(symbol, Slot(symbol))
        for slot in self.slots.values():
            if slot.child is None and now >= slot.not_before:
                self._start(slot)

    def _read_ready(self, slot: Slot) -> None:
        try:
            data = os.read(slot.ready_fd, 64)
        except BlockingIOError:  # pragma: no cover
            return
        if data:
            if not slot.ready:
                logger.info("matcher ready", extra={"symbol": slot.symbol, "pid": slot.child.pid if slot.child else None})
            slot.ready = True
            slot.startup_failures = 0
        self._close_ready(slot)  # one byte is all it ever writes; EOF: it died

    def _close_ready(self, slot: Slot) -> None:
        if slot.ready_fd is not None:
            os.close(slot.ready_fd)
            slot.ready_fd = None

    def _reap(self) -> None:
        now = time.monotonic()
        for slot in self.slots.values():
            child = slot.child
            if child is None or child.alive():
                continue
            if slot.ready_fd is not None:
                self._read_ready(slot)  # a ready byte written just before the exit still counts
            status = child.popen.returncode
            if slot.ready:
                delay = 0.0
                logger.error("matcher exited after a healthy run; restarting now",
                             extra={"symbol": slot.symbol, "status": status, "pid": child.pid})
            else:
                slot.startup_failures += 1
                delay = startup_backoff(slot.startup_failures, first_s=self.backoff_first_s, max_s=self.backoff_max_s)
                logger.error("matcher exited during startup; restarting after a delay",
                             extra={"symbol": slot.symbol, "status": status, "pid": child.pid,
                                    "failures": slot.startup_failures, "delay_s": delay})
            if slot.pid_fd is not None:
                os.close(slot.pid_fd)
                slot.pid_fd = None
            slot.child = None
            slot.ready = False
            slot.not_before = now + delay

    def _start(self, slot: Slot) -> None:
        read_fd, write_fd = os.pipe()
        try:
            slot.child = self.spawn(slot.symbol, write_fd)
        except OSError as exc:
            os.close(read_fd)
            slot.startup_failures += 1
            slot.not_before = time.monotonic() + startup_backoff(
                slot.startup_failures, first_s=self.backoff_first_s, max_s=self.backoff_max_s)
            logger.error("could not start a matcher", extra={"symbol": slot.symbol, "error": str(exc)})
            return
        finally:
            os.close(write_fd)  # the child has its own copy
        slot.ready_fd = read_fd
        slot.ready = False
        slot.restarts += 1
        if hasattr(os, "pidfd_open"):
            try:
                slot.pid_fd = os.pidfd_open(slot.child.pid)
            except OSError:  # an old kernel: SIGCHLD and the step timeout still apply
                slot.pid_fd = None

    def children(self) -> list[processes.Child]:
        return [slot.child for slot in self.slots.values() if slot.child is not None]

    def close(self) -> None:
        processes.stop(self.children())
        for slot in self.slots.values():
            self._close_ready(slot)
            if slot.pid_fd is not None:
                os.close(slot.pid_fd)
                slot.pid_fd = None
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)


def spawn_matcher(symbol: str, ready_fd: int) -> processes.Child:
    env = dict(os.environ, **{READY_FD_ENV: str(ready_fd)})
    return processes.spawn(
        f"matcher-{symbol}", [sys.executable, str(settings.BASE_DIR / "manage.py"), "run_matcher", symbol],
        env=env, pass_fds=(ready_fd,))


def market_symbols() -> list[str]:
    close_old_connections()
    return list(Market.objects.order_by("symbol").values_list("symbol", flat=True))


class Command(BaseCommand):
    help = "Run and supervise one matcher process per market."

    def handle(self, *args, **options):
        stop = {"requested": False}
        supervisor = Supervisor(market_symbols, spawn_matcher)

        def request_stop(signum, frame):
            stop["requested"] = True
            supervisor.wake()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        supervisor.install_signals()
        try:
            while not stop["requested"]:
                supervisor.step()
        finally:
            supervisor.close()
