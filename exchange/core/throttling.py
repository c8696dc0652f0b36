"""Rate limits in Redis, shared by every web process, as DRF throttle classes.

Algorithm: a sliding window log. Each (scope, client) has a sorted set of the
times of its accepted requests; a Lua script, atomic in Redis and timed by
Redis's own clock, drops entries older than the period, refuses the request
when ``limit`` remain, and otherwise records it. So at most ``limit``
requests are accepted in ANY period-long interval (no burst at window
edges), a refusal is not counted, and ``Retry-After`` is exactly when the
oldest entry leaves the window. Memory is one entry per accepted request
still inside its period: rates are meant per second or minute.

Who is counted (``request_identity``): the API key for key-signed requests,
the user for session requests, the client IP for anonymous ones.

Throttles (rates in ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``, from the
environment, in DRF's ``"<count>/<s|m|h|d>"`` form; an empty rate disables):

- ``AnonRateThrottle``: scope ``anon``, anonymous requests per IP;
- ``UserRateThrottle``: scope ``user``, authenticated requests per key/user;
- ``ScopedRateThrottle``: the view's ``throttle_scope`` (``orders``,
  ``auth``...), per key/user/IP, on top of the two above.

If Redis cannot be reached the request is refused with 503
SERVICE_UNAVAILABLE: an unlimited API is not what the operator configured.
"""

from __future__ import annotations

import logging
import os

import redis
from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from exchange.core.errors import ServiceUnavailable
from exchange.core.net import client_ip
from exchange.core.redis import get_redis

logger = logging.getLogger(__name__)

KEY_PREFIX = "throttle:"
_PERIODS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}

# KEYS[1] log; ARGV: limit, period in ms, a random suffix that keeps members unique.
# Returns {1, 0} when accepted, {0, microseconds until a slot frees} when refused.
_SLIDING_WINDOW_LUA = """
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local limit = tonumber(ARGV[1])
local period_us = tonumber(ARGV[2]) * 1000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_us - period_us)
if redis.call('ZCARD', KEYS[1]) < limit then
    redis.call('ZADD', KEYS[1], now_us, now_us .. ':' .. ARGV[3])
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, tonumber(oldest[2]) + period_us - now_us}
"""
_script = None


def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """``"100/s"`` -> (100, 1000 ms); ``"10/min"`` -> (10, 60000 ms); empty or None -> None (no limit)."""
    if not rate:
        return None
    count, _, period = rate.partition("/")
    if not count.strip().isdigit() or int(count) < 1 or not period or period[0] not in _PERIODS_S:
        raise ImproperlyConfigured(f"Invalid throttle rate {rate!r}: use '<count>/<s|m|h|d>' with count >= 1")
    return int(count), _PERIODS_S[period[0]] * 1000


def request_identity(request) -> str:
    from exchange.apikeys.models import ApiKey

    if isinstance(request.auth, ApiKey):
        return f"key:{request.auth.pk}"
    if request.user and request.user.is_authenticated:
        return f"user:{request.user.pk}"
    return f"ip:{client_ip(request)}"


def sliding_window_hit(key: str, limit: int, period_ms: int) -> tuple[bool, float]:
    """Count one request under ``key``; (accepted, seconds to wait when refused)."""
    global _script
    client = get_redis()
    if _script is None:
        _script = client.register_script(_SLIDING_WINDOW_LUA)
    try:
        accepted, wait_us = _script(keys=[key], args=[limit, period_ms, os.urandom(6).hex()], client=client)
    except redis.RedisError as exc:
        logger.error("rate limiter unavailable: %s", exc)
        raise ServiceUnavailable() from None
    return bool(accepted), max(int(wait_us), 0) / 1_000_000


class RedisRateThrottle(BaseThrottle):
    """Base class: subclasses say which scope applies to a request, or None."""

    scope: str | None = None

    def __init__(self):
        self._wait_s: float | None = None

    def get_scope(self, request, view) -> str | None:
        return self.scope

    def allow_request(self, request, view) -> bool:
        scope = self.get_scope(request, view)
        if scope is None:
            return True
        rates = api_settings.DEFAULT_THROTTLE_RATES
        if scope not in rates:
            raise ImproperlyConfigured(f"No throttle rate for scope {scope!r} in DEFAULT_THROTTLE_RATES")
        rate = parse_rate(rates[scope])
        if rate is None:
            return True
        limit, period_ms = rate
        accepted, self._wait_s = sliding_window_hit(f"{KEY_PREFIX}{scope}:{request_identity(request)}", limit, period_ms)
        return accepted

    def wait(self) -> float | None:
        return self._wait_s


class AnonRateThrottle(RedisRateThrottle):
    def get_scope(self, request, view):
        return None if request.user and request.user.is_authenticated else "anon"


class UserRateThrottle(RedisRateThrottle):
    def get_scope(self, request, view):
        return "user" if request.user and request.user.is_authenticated else None


class ScopedRateThrottle(RedisRateThrottle):
    def get_scope(self, request, view):
        return getattr(view, "throttle_scope", None)
