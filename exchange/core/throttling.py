"""Rate limits, replay protection and failed-authentication limits: one Redis script.

Algorithm: a sliding window log. Each (scope, client) has a sorted set of the
times of its accepted requests; the script, atomic in Redis and timed by
Redis's own clock, drops entries older than the period, refuses the request
when ``limit`` remain, and otherwise records it. So at most ``limit``
requests are accepted in ANY period-long interval (no burst at window
edges), a refusal is not counted, and ``Retry-After`` is exactly when the
oldest entry leaves the window. Memory is one entry per accepted request
still inside its period: rates are meant per second or minute.

``ADMISSION`` does, in one call and in this order, what a request needs
before it may act (``Admission`` builds its keys and arguments):

1. failed-authentication limits: refuse (429) a client IP or an API key id
   that failed authentication too often lately (scope ``auth_failures``,
   recorded by ``auth_failure_record`` on every 401 of key authentication);
2. the replay check of a signed request: its signature may be used once;
3. every rate limit that applies, each counted only if it accepts (DRF's
   semantics: all are checked, the longest wait is reported).

The DRF classes call it twice, as DRF separates authentication from
throttling (``ApiKeyAuthentication``: steps 1-2; ``RedisThrottle``: step 3);
the fast order path sends all three steps as one call in its pipeline.

Who is counted (``request_identity``): the API key for key-signed requests,
the user for session requests, the client IP for anonymous ones. Scopes and
rates (``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``, from the environment,
``"<count>/<s|m|h|d>"``; an empty rate disables): ``anon`` per IP for
anonymous requests, ``user`` per key/user for authenticated ones, a view's
``throttle_scope`` (``orders``, ``auth``...) on top, ``auth_failures`` per IP
and per presented key id.

If Redis cannot be reached the request is refused with 503
SERVICE_UNAVAILABLE: an unlimited API is not what the operator configured.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field

import redis
from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from exchange.core.errors import ServiceUnavailable
from exchange.core.net import client_ip
from exchange.core.redis import get_redis

logger = logging.getLogger(__name__)

KEY_PREFIX = "throttle:"
REPLAY_KEY_PREFIX = "apikey:replay:"
FAILURES_SCOPE = "auth_failures"
_PERIODS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}

ADMITTED, TOO_MANY_FAILURES, REPLAYED, THROTTLED = 0, 1, 2, 3

# KEYS: failure logs (nf), the replay key (0 or 1), throttle logs (nt).
# ARGV: nf, has_replay, nt, failure limit, failure period ms, replay ttl ms,
#       a random suffix that keeps members unique, then limit and period ms per throttle.
# Returns {status, microseconds to wait (for TOO_MANY_FAILURES and THROTTLED)}.
ADMISSION_LUA = """
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local nf, has_replay, nt = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local function trim(key, period_us)
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now_us - period_us)
    return redis.call('ZCARD', key)
end
local function wait_us(key, period_us)
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return tonumber(oldest[2]) + period_us - now_us
end
if nf > 0 then
    local limit, period_us = tonumber(ARGV[4]), tonumber(ARGV[5]) * 1000
    for i = 1, nf do
        if trim(KEYS[i], period_us) >= limit then
            return {1, wait_us(KEYS[i], period_us)}
        end
    end
end
if has_replay == 1 then
    if not redis.call('SET', KEYS[nf + 1], 1, 'NX', 'PX', ARGV[6]) then
        return {2, 0}
    end
end
local longest = -1
for j = 1, nt do
    local key = KEYS[nf + has_replay + j]
    local limit, period_ms = tonumber(ARGV[7 + 2 * j - 1]), ARGV[7 + 2 * j]
    local period_us = tonumber(period_ms) * 1000
    if trim(key, period_us) < limit then
        redis.call('ZADD', key, now_us, now_us .. ':' .. ARGV[7] .. ':' .. j)
        redis.call('PEXPIRE', key, period_ms)
    else
        local wait = wait_us(key, period_us)
        if wait > longest then longest = wait end
    end
end
if longest >= 0 then
    return {3, longest}
end
return {0, 0}
"""

# KEYS: failure logs; ARGV: limit, period ms, suffix. Records one failure in
# each (at most twice the limit, so an attack cannot grow them without bound)
# and returns the largest count.
_FAILURE_LUA = """
local now = redis.call('TIME')
local now_us = tonumber(now[1]) * 1000000 + tonumber(now[2])
local limit, period_ms = tonumber(ARGV[1]), ARGV[2]
local largest = 0
for i = 1, #KEYS do
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now_us - tonumber(period_ms) * 1000)
    local count = redis.call('ZCARD', KEYS[i])
    if count < 2 * limit then
        redis.call('ZADD', KEYS[i], now_us, now_us .. ':' .. ARGV[3])
        redis.call('PEXPIRE', KEYS[i], period_ms)
        count = count + 1
    end
    if count > largest then largest = count end
end
return largest
"""

_scripts: dict[str, object] = {}


def _script(name: str, client):
    """The registered script object (it runs EVALSHA and reloads the script when Redis lost it)."""
    script = _scripts.get(name)
    if script is None:
        script = _scripts[name] = client.register_script({"admission": ADMISSION_LUA, "failure": _FAILURE_LUA}[name])
    return script


def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """``"100/s"`` -> (100, 1000 ms); ``"10/min"`` -> (10, 60000 ms); empty or None -> None (no limit)."""
    if not rate:
        return None
    count, _, period = rate.partition("/")
    if not count.strip().isdigit() or int(count) < 1 or not period or period[0] not in _PERIODS_S:
        raise ImproperlyConfigured(f"Invalid throttle rate {rate!r}: use '<count>/<s|m|h|d>' with count >= 1")
    return int(count), _PERIODS_S[period[0]] * 1000


def scope_rate(scope: str) -> tuple[int, int] | None:
    """The configured rate of ``scope`` (None: unlimited). A view scope without a rate is a
    configuration error; ``auth_failures`` may be left out (unlimited)."""
    rates = api_settings.DEFAULT_THROTTLE_RATES
    if scope not in rates:
        if scope == FAILURES_SCOPE:
            return None
        raise ImproperlyConfigured(f"No throttle rate for scope {scope!r} in DEFAULT_THROTTLE_RATES")
    return parse_rate(rates[scope])


def _failure_keys(ip: str, key_id: str | None) -> list[str]:
    keys = [f"{KEY_PREFIX}{FAILURES_SCOPE}:ip:{ip}"]
    if key_id:
        # A presented key id may be anything up to the header's size: keep the key short.
        digest = key_id if len(key_id) <= 64 else hashlib.sha256(key_id.encode()).hexdigest()
        keys.append(f"{KEY_PREFIX}{FAILURES_SCOPE}:key:{digest}")
    return keys


@dataclass
class Admission:
    """The keys and arguments of one ADMISSION call; ``verdict`` reads its reply."""

    failure_keys: list[str] = field(default_factory=list)
    replay_key: str | None = None
    replay_ttl_ms: int = 0
    throttles: list[tuple[str, int, int]] = field(default_factory=list)  # (key, limit, period ms)

    def check_failures(self, *, ip: str, key_id: str | None) -> "Admission":
        if scope_rate(FAILURES_SCOPE) is not None:
            self.failure_keys = _failure_keys(ip, key_id)
        return self

    def check_replay(self, signature: str, ttl_ms: int) -> "Admission":
        self.replay_key, self.replay_ttl_ms = REPLAY_KEY_PREFIX + signature.lower(), ttl_ms
        return self

    def count(self, scope: str, identity: str) -> "Admission":
        rate = scope_rate(scope)
        if rate is not None:
            self.throttles.append((f"{KEY_PREFIX}{scope}:{identity}", *rate))
        return self

    @property
    def empty(self) -> bool:
        return not (self.failure_keys or self.replay_key or self.throttles)

    def keys_and_args(self) -> tuple[list[str], list]:
        failure = scope_rate(FAILURES_SCOPE) if self.failure_keys else None
        keys = [*self.failure_keys, *([self.replay_key] if self.replay_key else []),
                *(key for key, _, _ in self.throttles)]
        args = [len(self.failure_keys), 1 if self.replay_key else 0, len(self.throttles),
                failure[0] if failure else 0, failure[1] if failure else 0, self.replay_ttl_ms,
                os.urandom(6).hex()]
        for _, limit, period_ms in self.throttles:
            args.extend((limit, period_ms))
        return keys, args

    def run(self) -> tuple[int, float]:
        """Send the call with the sync client: ``(status, seconds to wait)``; 503 if Redis is down."""
        if self.empty:
            return ADMITTED, 0.0
        client = get_redis()
        keys, args = self.keys_and_args()
        try:
            reply = _script("admission", client)(keys=keys, args=args, client=client)
        except redis.RedisError as exc:
            logger.error("admission check unavailable: %s", exc)
            raise ServiceUnavailable() from None
        return self.verdict(reply)

    @staticmethod
    def verdict(reply) -> tuple[int, float]:
        status, wait_us = int(reply[0]), int(reply[1])
        return status, max(wait_us, 0) / 1_000_000


def auth_failure_record(*, ip: str, key_id: str | None) -> float | None:
    """Count a failed key authentication from ``ip`` (and for ``key_id``); the seconds to
    wait when that made the client exceed its allowance (answer 429), else None."""
    rate = scope_rate(FAILURES_SCOPE)
    if rate is None:
        return None
    limit, period_ms = rate
    client = get_redis()
    try:
        largest = _script("failure", client)(
            keys=_failure_keys(ip, key_id), args=[limit, period_ms, os.urandom(6).hex()], client=client)
    except redis.RedisError as exc:
        logger.error("failed-authentication limit unavailable: %s", exc)
        raise ServiceUnavailable() from None
    return period_ms / 1000 if int(largest) > limit else None


def sliding_window_hit(key: str, limit: int, period_ms: int) -> tuple[bool, float]:
    """Count one request under ``key``; (accepted, seconds to wait when refused)."""
    admission = Admission(throttles=[(key, limit, period_ms)])
    status, wait_s = admission.run()
    return status == ADMITTED, wait_s


def request_identity(request) -> str:
    from exchange.apikeys.models import ApiKey

    if isinstance(request.auth, ApiKey):
        return f"key:{request.auth.pk}"
    if request.user and request.user.is_authenticated:
        return f"user:{request.user.pk}"
    return f"ip:{client_ip(request)}"


def request_scopes(*, authenticated: bool, view_scope: str | None) -> list[str]:
    """The scopes that count a request: anon or user, and the view's own."""
    scopes = ["user" if authenticated else "anon"]
    if view_scope:
        scopes.append(view_scope)
    return scopes


class RedisThrottle(BaseThrottle):
    """Every rate limit of a request (``request_scopes``) in one Redis call."""

    def __init__(self):
        self._wait_s: float | None = None

    def allow_request(self, request, view) -> bool:
        authenticated = bool(request.user and request.user.is_authenticated)
        identity = request_identity(request)
        admission = Admission()
        for scope in request_scopes(authenticated=authenticated, view_scope=getattr(view, "throttle_scope", None)):
            admission.count(scope, identity)
        status, self._wait_s = admission.run()
        return status == ADMITTED

    def wait(self) -> float | None:
        return self._wait_s
