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

_pools: dict[int, asyncpg.Pool] = {}
_redis: dict[int, PipelineClient] = {}
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


async def database_pool() -> asyncpg.Pool:
    """The process's pool: each statement runs in its own transaction (autocommit)."""
    loop = id(asyncio.get_running_loop())
    pool = _pools.get(loop)
    if pool is None:
        pool = await asyncpg.create_pool(min_size=POOL_MIN, max_size=POOL_MAX, command_timeout=10,
                                         **_connect_kwargs())
        _pools[loop] = pool
    return pool


async def fetch_one(sql: str, *args) -> dict | None:
    """Run one statement (``%s`` placeholders) in its own transaction; its first row as a dict."""
    pool = _pools.get(id(asyncio.get_running_loop())) or await database_pool()
    async with pool.acquire() as connection:
        row = await connection.fetchrow(numbered(sql), *args)
    return None if row is None else dict(row)


async def fetch_all(sql: str, *args) -> list[dict]:
    """Run one statement (``%s`` placeholders) in its own transaction; its rows as dicts."""
    pool = _pools.get(id(asyncio.get_running_loop())) or await database_pool()
    async with pool.acquire() as connection:
        rows = await connection.fetch(numbered(sql), *args)
    return [dict(row) for row in rows]


def redis_client() -> PipelineClient:
    """The process's pipeline client of the application's Redis database (per event loop)."""
    loop = id(asyncio.get_running_loop())
    client = _redis.get(loop)
    if client is None:
        client = _redis[loop] = PipelineClient(settings.REDIS_APP_URL)
    return client


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
    """Close this event loop's clients (tests, shutdown)."""
    loop = id(asyncio.get_running_loop())
    pool = _pools.pop(loop, None)
    if pool is not None:
        await pool.close()
    client = _redis.pop(loop, None)
    if client is not None:
        await client.close()
