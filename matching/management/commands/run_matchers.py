"""``manage.py run_matchers``: one matcher process per market, restarted when it dies.

The supervisor sleeps in ``select()`` on each child's pidfd (readable when
the child exits; Linux 5.3+), its ready pipe, and a SIGCHLD wake-up pipe (for
kernels without pidfds), so it learns of an exit at once (no poll interval):

- a matcher that exits **after it reported ready** (its recovery finished:
  a SIGKILL, the OOM killer, a rolling restart, a bug in the loop) is
  restarted at once, however often that happens;
- a matcher that exits **during its own startup** (before ready: the
  database unreachable, recovery failing; or within ``HEALTHY_AFTER_S`` of
  its ready report, dying in its first batch every time) is restarted after
  a delay that doubles at each consecutive such exit, from
  ``BACKOFF_FIRST_S`` up to ``BACKOFF_MAX_S``; a healthy run resets it.

Behind each ready matcher runs a **standby**: a ``run_matcher --standby``
that has paid for Python's and Django's start-up and waits on the market's
advisory lock. When the active matcher dies its database session ends, the
lock passes to the standby at once, and the standby recovers and reports
ready; the supervisor then starts a new standby. Python's start-up (1-2 s on
a busy two-core host) is thus out of the restart time. ``--no-standby``
halves the processes (and memory) for hosts with many markets.

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
# An exit sooner than this after the ready report counts as a startup failure:
# a matcher that dies in its first batch every time must not restart in a loop.
HEALTHY_AFTER_S = 1.0
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0


@dataclass
class Member:
    """One matcher process: the active one, or the standby waiting for the lock."""

    child: processes.Child
    ready_fd: int | None  # read end of its ready pipe
    pid_fd: int | None = None  # readable once it has exited
    ready: bool = False
    ready_at: float = 0.0

    def close(self) -> None:
        for name in ("ready_fd", "pid_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


@dataclass
class Slot:
    """One market's matchers as the supervisor sees them."""

    symbol: str
    active: Member | None = None
    standby: Member | None = None
    startup_failures: int = 0  # consecutive exits before ready
    not_before: float = 0.0  # no start before this (monotonic)
    starts: int = 0

    @property
    def ready(self) -> bool:
        return self.active is not None and self.active.ready

    @property
    def child(self) -> processes.Child | None:
        return self.active.child if self.active is not None else None

    def members(self) -> list[Member]:
        return [member for member in (self.active, self.standby) if member is not None]


def startup_backoff(failures: int, *, first_s: float = BACKOFF_FIRST_S, max_s: float = BACKOFF_MAX_S) -> float:
    """Delay before the next start after ``failures`` consecutive startup failures."""
    if failures <= 0:
        return 0.0
    return min(max_s, first_s * 2 ** (failures - 1))


class Supervisor:
    """Runs ``spawn(symbol, ready_fd, standby)`` for every symbol ``symbols()`` lists.

    ``spawn`` must start a process that writes one byte to ``ready_fd`` once it
    is ready (then the fd may be closed) and return its ``processes.Child``.
    With ``standby`` it first waits for the market's lock (the active
    matcher's), so it takes over the moment the active one is gone: it has
    already paid for Python's and Django's start-up.
    """

    def __init__(self, symbols, spawn, *, standby: bool = True, markets_every_s: float = MARKETS_EVERY_S,
                 backoff_first_s: float = BACKOFF_FIRST_S, backoff_max_s: float = BACKOFF_MAX_S,
                 healthy_after_s: float = HEALTHY_AFTER_S):
        self.symbols = symbols
        self.spawn = spawn
        self.use_standby = standby
        self.markets_every_s = markets_every_s
        self.backoff_first_s = backoff_first_s
        self.backoff_max_s = backoff_max_s
        self.healthy_after_s = healthy_after_s
        self.slots: dict[str, Slot] = {}
        self._next_markets = 0.0
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            flags = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)

    # ------------------------------------------------------------- signals

    def install_signals(self) -> None:
        """Wake ``select()`` when a child exits, where pidfds are missing (main thread only)."""
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
            slot.not_before for slot in self.slots.values() if self._wants_start(slot)]
        wait = max(0.0, min([now + timeout_s, *deadlines]) - now)
        fds = [self._wake_r]
        for slot in self.slots.values():
            for member in slot.members():
                fds.extend(fd for fd in (member.ready_fd, member.pid_fd) if fd is not None)
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
        # Exits first: a standby's ready byte often arrives in the same wake-up
        # as its predecessor's exit, and must find the standby promoted.
        self._reap()
        for slot in self.slots.values():
            for member in slot.members():
                if member.ready_fd is not None and member.ready_fd in readable:
                    self._read_ready(slot, member)
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
            if now < slot.not_before or not self._wants_start(slot):
                continue
            if slot.active is None:
                slot.active = self._start(slot, standby=False)
            else:
                slot.standby = self._start(slot, standby=True)

    def _wants_start(self, slot: Slot) -> bool:
        """No matcher at all; or no standby behind a ready one (only once the
        active one is ready: a standby's start-up never competes with a
        recovery for the CPU)."""
        if slot.active is None:
            return slot.standby is None
        return self.use_standby and slot.standby is None and slot.active.ready

    def _read_ready(self, slot: Slot, member: Member) -> None:
        try:
            data = os.read(member.ready_fd, 64)
        except BlockingIOError:  # pragma: no cover
            return
        os.close(member.ready_fd)  # one byte is all it ever writes; EOF: it died
        member.ready_fd = None
        if not data:
            return
        member.ready = True
        member.ready_at = time.monotonic()
        if member is slot.standby:
            # The standby holds the lock now: whatever the active one is doing,
            # it no longer holds it (a lost database session); it must go.
            previous = slot.active
            slot.active, slot.standby = member, None
            if previous is not None:
                logger.error("standby took over from a matcher still running; stopping that one",
                             extra={"symbol": slot.symbol, "pid": previous.child.pid})
                processes.stop([previous.child], grace_s=5.0)
                previous.close()
        logger.info("matcher ready", extra={"symbol": slot.symbol, "pid": member.child.pid})

    def _reap(self) -> None:
        now = time.monotonic()
        for slot in self.slots.values():
            for member in slot.members():
                if member.child.alive():
                    continue
                if member.ready_fd is not None:
                    self._read_ready(slot, member)  # a ready byte written just before the exit still counts
                status = member.child.popen.returncode
                role = "active" if member is slot.active else "standby"
                if member.ready and now - member.ready_at >= self.healthy_after_s:
                    slot.startup_failures = 0
                    delay = 0.0
                    logger.error("matcher exited after a healthy run; restarting now",
                                 extra={"symbol": slot.symbol, "status": status, "pid": member.child.pid,
                                        "standby_takes_over": slot.standby is not None})
                else:
                    slot.startup_failures += 1
                    delay = startup_backoff(slot.startup_failures, first_s=self.backoff_first_s,
                                            max_s=self.backoff_max_s)
                    logger.error("matcher exited during startup; restarting after a delay",
                                 extra={"symbol": slot.symbol, "status": status, "pid": member.child.pid,
                                        "role": role, "failures": slot.startup_failures, "delay_s": delay})
                member.close()
                if member is slot.active:
                    slot.active = None
                    if slot.standby is not None:
                        slot.active, slot.standby = slot.standby, None  # it takes the lock and recovers
                else:
                    slot.standby = None
                slot.not_before = max(slot.not_before, now + delay) if delay else slot.not_before

    def _start(self, slot: Slot, *, standby: bool) -> Member | None:
        read_fd, write_fd = os.pipe()
        try:
            child = self.spawn(slot.symbol, write_fd, standby)
        except OSError as exc:
            os.close(read_fd)
            slot.startup_failures += 1
            slot.not_before = time.monotonic() + startup_backoff(
                slot.startup_failures, first_s=self.backoff_first_s, max_s=self.backoff_max_s)
            logger.error("could not start a matcher", extra={"symbol": slot.symbol, "error": str(exc)})
            return None
        finally:
            os.close(write_fd)  # the child has its own copy
        member = Member(child, read_fd)
        slot.starts += 1
        if hasattr(os, "pidfd_open"):
            try:
                member.pid_fd = os.pidfd_open(child.pid)
            except OSError:  # an old kernel: SIGCHLD and the step timeout still apply
                member.pid_fd = None
        return member

    def children(self) -> list[processes.Child]:
        return [member.child for slot in self.slots.values() for member in slot.members()]

    def close(self) -> None:
        processes.stop(self.children())
        for slot in self.slots.values():
            for member in slot.members():
                member.close()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)


def spawn_matcher(symbol: str, ready_fd: int, standby: bool = False) -> processes.Child:
    env = dict(os.environ, **{READY_FD_ENV: str(ready_fd)})
    argv = [sys.executable, str(settings.BASE_DIR / "manage.py"), "run_matcher", symbol]
    if standby:
        argv.append("--standby")
    return processes.spawn(f"matcher-{symbol}{'-standby' if standby else ''}", argv, env=env, pass_fds=(ready_fd,))


def market_symbols() -> list[str]:
    close_old_connections()
    return list(Market.objects.order_by("symbol").values_list("symbol", flat=True))


class Command(BaseCommand):
    help = "Run and supervise one matcher process per market."

    def add_arguments(self, parser):
        parser.add_argument("--no-standby", action="store_true",
                            help="no standby process per market (restarts then pay Python's start-up)")

    def handle(self, *args, no_standby: bool, **options):
        stop = {"requested": False}
        supervisor = Supervisor(market_symbols, spawn_matcher, standby=not no_standby)

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
