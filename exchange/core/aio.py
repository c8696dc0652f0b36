"""Async clients of PostgreSQL and Redis for the handlers that run on the event loop.

Django's ORM is synchronous; the fast order path (``orders.fastpath``) talks
to PostgreSQL with asyncpg from a small pool per process, and to Redis with
``exchange.core.resp`` (pipelines on one connection). Both cost a fraction
of the CPU of psycopg's and redis-py's async paths per round trip (measured
in docs/BENCHMARKS.md, "Order placement over HTTP"), which matters on a path
with a budget of a few hundred microseconds per order. Both are created
lazily in the process and event loop that first uses them (a web worker),
with the settings Django's connections use. What is rare on that path (a
cache miss) may use the ORM in a worker thread through ``in_thread``.

Statements are written once with ``%s`` placeholders, for Django's cursor;
``numbered()`` gives the ``$1``-style text asyncpg takes.
"""

from __future__ import annotations

import asyncio
import functools
import re
import shlex

import asyncpg
from django.conf import settings
from django.db import connections

from exchange.core.resp import PipelineClient

# Connections per web process for the fast path; the event loop runs one
# statement per connection at a time, and each is a single round trip.
POOL_MIN, POOL_MAX = 2, 16

# What belongs to one event loop (pools, clients, the placement batcher), by the
# loop's id; ``close()`` drops it all, so a new loop never inherits a dead one's.
_loop_locals: dict[int, dict[str, object]] = {}
_PLACEHOLDER = re.compile(r"%s")


@functools.lru_cache(maxsize=64)
def numbered(sql: str) -> str:
    """``%s`` placeholders as asyncpg's ``$1, $2...``."""
    counter = iter(range(1, 1000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


def _connect_kwargs() -> dict:
    """asyncpg's arguments for the default database (the test database under pytest)."""
    params = connections["default"].get_connection_params()
    server_settings = {"TimeZone": "UTC"}
    words = shlex.split(params.get("options", ""))
    for flag, value in zip(words, words[1:]):
        if flag == "-c" and "=" in value:
            name, _, setting = value.partition("=")
            server_settings[name] = setting
    if params.get("application_name"):
        server_settings["application_name"] = params["application_name"]
    return {
        "host": params.get("host") or None, "port": int(params.get("port") or 5432),
        "user": params.get("user") or None, "password": params.get("password") or None,
        "database": params.get("dbname") or params.get("database"), "server_settings": server_settings,
        "ssl": params.get("sslmode") if params.get("sslmode") not in (None, "", "disable") else None,
    }


def loop_local(name: str, factory):
    """The running event loop's object ``name``, made by ``factory()`` on first use."""
    values = _loop_locals.setdefault(id(asyncio.get_running_loop()), {})
    value = values.get(name)
    if value is None:
        value = values[name] = factory()
    return value


async def _session_kept(connection: asyncpg.Connection) -> None:
    """What a connection needs before it goes back to the pool: nothing more than asyncpg
    always does (roll back an open transaction). Its default also sends ``RESET ALL;
    UNLISTEN *; CLOSE ALL; SELECT pg_advisory_unlock_all()``, a round trip per statement
    for session state nothing here creates: every statement runs alone in autocommit,
    with no SET, LISTEN, cursor or session lock."""


async def database_pool() -> asyncpg.Pool:
    """The process's pool: each statement runs in its own transaction (autocommit)."""
    values = _loop_locals.setdefault(id(asyncio.get_running_loop()), {})
    pool = values.get("pool")
    if pool is None:
        pool = await asyncpg.create_pool(min_size=POOL_MIN, max_size=POOL_MAX, command_timeout=10,
                                         reset=_session_kept, **_connect_kwargs())
        values["pool"] = pool
    return pool


async def fetch_one(sql: str, *args) -> dict | None:
    """Run one statement (``%s`` placeholders) in its own transaction; its first row as a dict."""
    pool = _loop_locals.get(id(asyncio.get_running_loop()), {}).get("pool") or await database_pool()
    async with pool.acquire() as connection:
        row = await connection.fetchrow(numbered(sql), *args)
    return None if row is None else dict(row)


async def fetch_all(sql: str, *args) -> list[dict]:
    """Run one statement (``%s`` placeholders) in its own transaction; its rows as dicts."""
    pool = _loop_locals.get(id(asyncio.get_running_loop()), {}).get("pool") or await database_pool()
    async with pool.acquire() as connection:
        rows = await connection.fetch(numbered(sql), *args)
    return [dict(row) for row in rows]


def redis_client() -> PipelineClient:
    """The process's pipeline client of the application's Redis database (per event loop)."""
    return loop_local("redis", lambda: PipelineClient(settings.REDIS_APP_URL))


async def in_thread(function, *args, **kwargs):
    """Run synchronous Django code (the ORM) in a worker thread, returning its
    database connection to the pool afterwards."""

    def run():
        try:
            return function(*args, **kwargs)
        finally:
            connections.close_all()

    return await asyncio.to_thread(run)


async def close() -> None:
    """Close this event loop's clients and forget its objects (tests, shutdown)."""
    values = _loop_locals.pop(id(asyncio.get_running_loop()), {})
    if values.get("pool") is not None:
        await values["pool"].close()
    if values.get("redis") is not None:
        await values["redis"].close()
