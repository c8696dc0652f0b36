"""The embedded services are real servers, shared by the processes of a run,
stopped with the last of them, and keep their data between runs."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
import redis
from django.conf import settings
from django.db import connection

from exchange import runtime
from exchange.core.config import celery_redis_url, database_settings, database_url, redis_url_with_db

PROBE = Path(__file__).with_name("runtime_probe.py")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def data_dir():
    # Unix socket paths are limited to ~100 characters: keep the folder short.
    path = tempfile.mkdtemp(prefix="exr-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env_without_service_urls() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _probe(data_dir: str, action: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(PROBE), data_dir, action],
        env=_env_without_service_urls(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def _run_probe(data_dir: str, action: str) -> tuple[dict, dict]:
    process = _probe(data_dir, action)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    urls, state = (json.loads(line) for line in out.strip().splitlines())
    return urls, state


def _servers_respond(urls: dict) -> tuple[bool, bool]:
    try:
        with psycopg.connect(urls["database_url"], connect_timeout=2):
            database_up = True
    except psycopg.OperationalError:
        database_up = False
    try:
        redis_up = bool(redis.Redis.from_url(urls["redis_url"], socket_timeout=2).ping())
    except (redis.RedisError, OSError):
        redis_up = False
    return database_up, redis_up


@pytest.mark.django_db
def test_embedded_postgres_is_real_postgresql():
    """PostgreSQL-only syntax (FILTER, generate_series, jsonb operators) runs on the test database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FILTER (WHERE n % 2 = 0), ('{\"a\": [1, 2]}'::jsonb -> 'a' ->> 1) "
            "FROM generate_series(1, 10) AS n"
        )
        assert cursor.fetchone() == (5, "2")
        cursor.execute("SHOW server_version")
        version = cursor.fetchone()[0]
    if "database" in runtime.embedded:
        assert version.startswith("16."), version


def test_embedded_redis_stream_round_trip(redis_app):
    """A consumer group reads what XADD wrote, acknowledges it, and nothing stays pending."""
    entry_id = redis_app.xadd("probe-stream", {"order": "42"})
    redis_app.xgroup_create("probe-stream", "matchers", id="0")
    [[stream, entries]] = redis_app.xreadgroup("matchers", "m1", {"probe-stream": ">"}, count=10)
    assert stream == b"probe-stream"
    assert entries == [(entry_id, {b"order": b"42"})]
    assert redis_app.xpending("probe-stream", "matchers")["pending"] == 1
    assert redis_app.xack("probe-stream", "matchers", entry_id) == 1
    assert redis_app.xpending("probe-stream", "matchers")["pending"] == 0
    if "redis" in runtime.embedded:
        assert redis_app.info("server")["redis_version"].startswith("6.2")


def test_second_process_attaches_and_data_survives_restart(data_dir):
    """A process started while another owns the servers attaches to them; the
    servers stop with the last user and the next run finds the data."""
    owner = _probe(data_dir, "hold")
    urls = json.loads(owner.stdout.readline())
    assert json.loads(owner.stdout.readline()) == {"rows": ["written"], "stream": 1}

    attached_urls, state = _run_probe(data_dir, "read")
    assert attached_urls == urls
    assert state == {"rows": ["written"], "stream": 1}
    assert _servers_respond(urls) == (True, True), "the attached process stopped the owner's servers"

    owner.communicate("\n", timeout=60)
    assert owner.returncode == 0
    assert _servers_respond(urls) == (False, False), "servers outlived their last user"

    _, state = _run_probe(data_dir, "read")
    assert state == {"rows": ["written"], "stream": 1}
    assert _servers_respond(urls) == (False, False)


def test_a_killed_owner_does_not_pin_the_servers(data_dir):
    """A SIGKILLed user leaves the servers running; the next process adopts them
    and, being the last live user, stops them when it exits."""
    owner = _probe(data_dir, "hold")
    urls = json.loads(owner.stdout.readline())
    owner.stdout.readline()
    owner.send_signal(signal.SIGKILL)
    owner.wait(timeout=10)
    assert _servers_respond(urls) == (True, True)

    _, state = _run_probe(data_dir, "read")
    assert state == {"rows": ["written"], "stream": 1}
    assert _servers_respond(urls) == (False, False)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def test_configured_urls_switch_to_external_servers(data_dir):
    """With DATABASE_URL and REDIS_URL set, Django uses those servers (here the
    machine's own PostgreSQL and Redis over TCP) and starts nothing embedded."""
    if not (_reachable("127.0.0.1", 5432) and _reachable("127.0.0.1", 6379)):
        pytest.skip("no PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 to act as external servers")
    script = (
        "import django, json; django.setup()\n"
        "from django.db import connection\n"
        "from exchange.core.redis import get_redis\n"
        "from exchange import runtime\n"
        "cur = connection.cursor(); cur.execute('SELECT inet_server_port()')\n"
        "print(json.dumps({'pg_port': cur.fetchone()[0],"
        " 'redis_port': get_redis().info('server')['tcp_port'], 'embedded': sorted(runtime.embedded)}))\n"
    )
    env = _env_without_service_urls()
    env.update(
        DJANGO_SETTINGS_MODULE="exchange.settings.base",
        EXCHANGE_DATA_DIR=data_dir,
        DATABASE_URL="postgresql://postgres@127.0.0.1:5432/postgres",
        REDIS_URL="redis://127.0.0.1:6379/9",
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"pg_port": 5432, "redis_port": 6379, "embedded": []}
    assert not (Path(data_dir) / "postgres").exists()
    assert not (Path(data_dir) / "redis").exists()


def test_database_settings_from_urls():
    """Socket URLs as pgserver prints them and TCP URLs with credentials both parse."""
    socket_db = database_settings("postgresql://postgres:@/postgres?host=/tmp/x/pg")
    assert (socket_db["HOST"], socket_db["NAME"], socket_db["USER"], socket_db["PASSWORD"]) == (
        "/tmp/x/pg", "postgres", "postgres", "")
    tcp_db = database_settings("postgres://ex%40user:p%2Fw@db.internal:6543/exchange?sslmode=require")
    assert (tcp_db["HOST"], tcp_db["PORT"], tcp_db["USER"], tcp_db["PASSWORD"], tcp_db["NAME"]) == (
        "db.internal", "6543", "ex@user", "p/w", "exchange")
    assert tcp_db["OPTIONS"] == {"sslmode": "require"}
    with pytest.raises(ValueError):
        database_settings("mysql://root@localhost/db")


def test_database_url_reads_the_settings_back():
    """``database_url`` is ``database_settings`` backwards (a child process reaches the
    same database, the test one included): awkward characters survive, the
    process's own ``application_name`` is left for the child to set."""
    for url in ("postgresql://postgres:@/test_x?host=/tmp/a b/pg",
                "postgres://ex%40user:p%2Fw@db.internal:6543/exchange?sslmode=require"):
        database = database_settings(url)
        database["OPTIONS"]["application_name"] = "exchange:bench_matcher"
        again = database_settings(database_url(database))
        assert again["OPTIONS"] == {key: value for key, value in database["OPTIONS"].items()
                                    if key != "application_name"}
        assert {k: v for k, v in again.items() if k != "OPTIONS"} == {
            k: v for k, v in database.items() if k != "OPTIONS"}


def test_redis_urls_per_purpose():
    """Each purpose gets its own logical database on the same server, socket or TCP."""
    assert redis_url_with_db("unix:///tmp/r/redis.sock", 3) == "unix:///tmp/r/redis.sock?db=3"
    assert redis_url_with_db("redis://:secret@cache:6379/0", 2) == "redis://:secret@cache:6379/2"
    assert celery_redis_url("unix:///tmp/r/redis.sock", 2) == "redis+socket:///tmp/r/redis.sock?virtual_host=2"
    assert celery_redis_url("redis://cache:6379/0", 2) == "redis://cache:6379/2"
    assert settings.REDIS_APP_URL != settings.REDIS_CHANNELS_URL != settings.REDIS_CACHE_URL
