"""The process-wide Redis client for application data (streams, heartbeats, throttles)."""

from __future__ import annotations

import functools

import redis
from django.conf import settings


@functools.cache
def get_redis() -> redis.Redis:
    """A client with its own connection pool, created once per process.

    Timeouts keep a dead Redis from hanging a request: callers see
    ``redis.ConnectionError``/``TimeoutError`` quickly and answer 503.
    """
    return redis.Redis.from_url(
        settings.REDIS_APP_URL,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=30,
    )
