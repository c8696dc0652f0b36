"""Starting and stopping child processes so that none is ever left behind.

Each child runs in its own session (Ctrl-C in the terminal reaches only the
launcher, which then stops the children in order) and asks the kernel to send
it SIGTERM if the launcher dies without cleaning up (PR_SET_PDEATHSIG).
Stopping sends SIGTERM to a child's whole process group (Celery's pool
processes included), then SIGKILL to what is still alive after a grace period.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except OSError:
        pass  # not Linux: the launcher's own cleanup still applies


@dataclass
class Child:
    name: str
    argv: list[str]
    popen: subprocess.Popen = field(repr=False)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


def spawn(name: str, argv: list[str], *, env: dict | None = None, **popen_kwargs) -> Child:
    environment = dict(os.environ if env is None else env)
    environment.setdefault("PYTHONUNBUFFERED", "1")
    popen = subprocess.Popen(
        argv,
        env=environment,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        **popen_kwargs,
    )
    return Child(name, argv, popen)


def _signal_group(child: Child, sig: int) -> None:
    try:
        os.killpg(child.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(children: list[Child], *, grace_s: float = 10.0) -> None:
    """SIGTERM every child's group, wait up to ``grace_s``, then SIGKILL the rest."""
    for child in children:
        _signal_group(child, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for child in children:
        remaining = max(0.0, deadline - time.monotonic())
        try:
            child.popen.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            pass
    for child in children:
        # Also reaps grandchildren the group may still hold (e.g. pool workers).
        _signal_group(child, signal.SIGKILL)
        if child.alive():
            child.popen.wait()
