"""run_matchers' supervisor with real child processes (stand-ins for matchers):
an exit after a healthy run is restarted at once, an exit during startup backs
off, and a new market gets a child within about a second."""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest

from exchange import processes
from matching.management.commands.run_matchers import Supervisor, startup_backoff

# A stand-in matcher: "ready" takes an exclusive lock on a file (the market's
# advisory lock: a standby blocks on it until the active one is gone), reports
# ready and waits to be killed; "broken" exits before reporting ready, like a
# matcher whose recovery fails; "flash" exits right after reporting ready.
CHILD = """
import fcntl, os, sys, time
fd = int(sys.argv[2])
if sys.argv[1] in ("ready", "flash"):
    lock = open(sys.argv[3], "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    os.write(fd, b"R"); os.close(fd)
    if sys.argv[1] == "ready":
        time.sleep(600)
sys.exit(3)
"""


def stand_in(behaviour_of, lock_dir, spawned=None):
    def spawn(symbol: str, ready_fd: int, standby: bool = False) -> processes.Child:
        if spawned is not None:
            spawned.append((time.monotonic(), standby))
        argv = [sys.executable, "-c", CHILD, behaviour_of(symbol), str(ready_fd), str(lock_dir / symbol)]
        return processes.spawn(symbol, argv, pass_fds=(ready_fd,))
    return spawn


def run_until(supervisor: Supervisor, condition, timeout_s: float) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout_s:
            raise AssertionError("condition not met in time")
        supervisor.step(timeout_s=0.5)
    return time.monotonic() - started


@pytest.fixture
def supervisors():
    made = []
    yield made.append
    for supervisor in made:
        supervisor.close()


def test_backoff_doubles_and_is_capped():
    assert [startup_backoff(n, first_s=0.5, max_s=4) for n in range(6)] == [0, 0.5, 1, 2, 4, 4]


@pytest.mark.parametrize("standby", [False, True])
def test_a_matcher_killed_after_a_healthy_run_is_restarted_at_once(supervisors, tmp_path, standby):
    supervisor = Supervisor(lambda: ["AAA-BBB"], stand_in(lambda symbol: "ready", tmp_path), backoff_first_s=2.0,
                            standby=standby, healthy_after_s=0.2)
    supervisors(supervisor)
    slot = None

    def ready():
        return supervisor.slots and supervisor.slots["AAA-BBB"].ready

    run_until(supervisor, ready, 20)
    slot = supervisor.slots["AAA-BBB"]
    gaps = []
    for _ in range(5):  # repeated kills: no growing delay (the old supervisor reached 8 s, then 16 s...)
        if standby:  # as in production: a kill comes after the standby is up
            run_until(supervisor, lambda: slot.standby is not None, 20)
        time.sleep(0.3)  # a healthy run: longer than healthy_after_s
        victim = slot.child.pid
        os.kill(victim, signal.SIGKILL)
        gaps.append(run_until(supervisor, lambda: ready() and slot.child.pid != victim, 20))
    assert slot.startup_failures == 0
    # Python's start-up dominates; a 2 s backoff or a 3 s poll would show.
    print("restart gaps", [round(g, 3) for g in gaps])
    assert max(gaps) < 1.5, gaps


def test_a_matcher_that_dies_during_startup_backs_off_exponentially(supervisors, tmp_path):
    spawned = []
    supervisor = Supervisor(lambda: ["AAA-BBB"], stand_in(lambda symbol: "broken", tmp_path, spawned),
                            backoff_first_s=0.2, backoff_max_s=0.8)
    supervisors(supervisor)
    run_until(supervisor, lambda: len(spawned) >= 6, 30)
    assert not any(standby for _, standby in spawned)  # no standby behind a matcher that never got ready
    starts = [moment for moment, _ in spawned]
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
    # Each gap is the child's life (a Python start-up) plus the delay: 0.2, 0.4, 0.8, 0.8, 0.8.
    delays = [0.2, 0.4, 0.8, 0.8, 0.8]
    for gap, delay in zip(gaps, delays):
        assert gap >= delay
    assert gaps[2] > gaps[0] + 0.4
    assert supervisor.slots["AAA-BBB"].startup_failures >= 5


def test_a_matcher_that_dies_right_after_ready_backs_off_too(supervisors, tmp_path):
    """Dying in its first batch every time is no healthy run: no restart loop."""
    spawned = []
    supervisor = Supervisor(lambda: ["AAA-BBB"], stand_in(lambda symbol: "flash", tmp_path, spawned),
                            backoff_first_s=0.3, backoff_max_s=2.0, healthy_after_s=1.0, standby=False)
    supervisors(supervisor)
    run_until(supervisor, lambda: supervisor.slots.get("AAA-BBB") is not None
              and supervisor.slots["AAA-BBB"].startup_failures >= 3, 30)
    starts = [moment for moment, _ in spawned]
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
    assert gaps[1] >= 0.6 and gaps[0] >= 0.3, gaps


def test_a_market_added_later_gets_a_matcher_within_seconds(supervisors, tmp_path):
    markets = ["AAA-BBB"]
    supervisor = Supervisor(lambda: list(markets), stand_in(lambda symbol: "ready", tmp_path), markets_every_s=0.5)
    supervisors(supervisor)
    run_until(supervisor, lambda: "AAA-BBB" in supervisor.slots and supervisor.slots["AAA-BBB"].ready, 20)
    markets.append("CCC-DDD")
    took = run_until(supervisor, lambda: "CCC-DDD" in supervisor.slots and supervisor.slots["CCC-DDD"].ready, 20)
    assert took < 3.0


# ------------------------------------------------ real matchers: a standby


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_real_standby_takes_over_when_the_matcher_is_killed(traders, market, redis_app):
    """``run_matcher`` and ``run_matcher --standby`` on the test database: the
    standby waits on the market's lock, takes over within a second of a
    SIGKILL of the active matcher, and applies the next order; a standby still
    waiting leaves at once on SIGTERM."""
    from matching.stream import heartbeat_read
    from orders.models import Order
    from tests.e2e.harness import ROOT, child_env, wait_for
    from tests.matching.conftest import place

    env = child_env()
    argv = [sys.executable, "manage.py", "run_matcher", market.symbol, "--block-ms", "5"]
    active = processes.spawn("active", argv, env=env, cwd=ROOT)
    standby = spare = None
    try:
        wait_for(lambda: (heartbeat_read(market.symbol) or {}).get("pid") == active.pid, timeout_s=60,
                 what="the active matcher")
        standby = processes.spawn("standby", [*argv, "--standby"], env=env, cwd=ROOT)
        time.sleep(5)  # the standby is up and waiting on the lock
        assert standby.alive()
        os.kill(active.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: (heartbeat_read(market.symbol) or {}).get("pid") == standby.pid, timeout_s=30,
                 what="the standby taking over")
        took = time.monotonic() - killed
        order = place(traders[0], "BUY", price=100, quantity=1)
        wait_for(lambda: Order.objects.get(pk=order.pk).status == "NEW", timeout_s=30, what="the order applied")
        assert took < 2.0, took

        spare = processes.spawn("spare", [*argv, "--standby"], env=env, cwd=ROOT)
        time.sleep(4)
        assert spare.alive()
        os.kill(spare.pid, signal.SIGTERM)
        begun = time.monotonic()
        spare.popen.wait(timeout=10)
        assert time.monotonic() - begun < 1.0
        assert standby.alive()  # the active one is untouched
    finally:
        processes.stop([child for child in (active, standby, spare) if child is not None])
