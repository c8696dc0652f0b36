"""Fixtures for the live-updates tests: the real ASGI application, the real
channels-redis layer (its own Redis database, flushed around each test) and
WebSocket clients from channels' test communicator."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from exchange.asgi import application
from exchange.live.fanout import group_sender

from tests.matching.conftest import drain, fund, market, place, traders  # noqa: F401 - fixtures and helpers


@pytest.fixture
def channel_redis():
    client = redis.Redis.from_url(settings.REDIS_CHANNELS_URL)
    client.flushdb()
    group_sender.cache_clear()
    yield client
    client.flushdb()
    group_sender.cache_clear()


def session_cookie(user) -> bytes:
    """A logged-in session for ``user``, as the Cookie header a browser sends."""
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


def communicator(user=None) -> WebsocketCommunicator:
    headers = [(b"host", b"127.0.0.1")]
    if user is not None:
        headers.append((b"cookie", session_cookie(user)))
    return WebsocketCommunicator(application, "/ws/", headers=headers)


async def receive(ws, timeout: float = 3.0) -> dict:
    return await ws.receive_json_from(timeout=timeout)


async def receive_until(ws, predicate, timeout: float = 3.0, limit: int = 50) -> tuple[dict, list[dict]]:
    """The first message satisfying ``predicate`` and those received before it."""
    skipped = []
    for _ in range(limit):
        message = await receive(ws, timeout)
        if predicate(message):
            return message, skipped
        skipped.append(message)
    raise AssertionError(f"no matching message in {limit}: {skipped[-3:]}")


class MatcherThread:
    """A matcher that lives on its own thread and database connection.

    The consumer's database calls close the calling thread's connection when
    they finish (channels' ``database_sync_to_async``); the matcher's
    advisory lock lives on its connection, so the matcher must not share the
    test thread's."""

    def __init__(self, symbol: str):
        from matching.worker.matcher import Matcher

        self.pool = ThreadPoolExecutor(max_workers=1)
        self.matcher = Matcher(symbol, batch_size=500, block_ms=1, sweep_after_s=0.5)
        self.call(self.matcher.start)

    def call(self, function, *args):
        return self.pool.submit(function, *args).result()

    def drain(self) -> None:
        self.call(drain, self.matcher)

    async def adrain(self) -> None:
        await asyncio.wrap_future(self.pool.submit(drain, self.matcher))

    def stop(self) -> None:
        from django.db import connection

        self.call(self.matcher.stop)
        self.call(lambda: connection.close())
        self.pool.shutdown()


@pytest.fixture
def live_matcher(market, redis_app, channel_redis):
    running = MatcherThread(market.symbol)
    yield running
    running.stop()
