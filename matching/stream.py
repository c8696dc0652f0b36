"""The command stream of each market, and the matchers' heartbeats.

A stream entry is a reference to a database row, never the order itself:
``{"c": "new", "id": <order id>}``, ``cancel`` (order id), ``cancel_all``
(user id), ``amend`` (amendment id) or ``status`` (status-change request id).
PostgreSQL holds every accepted command; the stream only sequences them and
wakes the matcher. A command lost from Redis is found again in the database
(orders still PENDING, cancels still requested...), and a command applied
twice is skipped because its row says it was applied.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from decimal import Decimal

import redis
from django.conf import settings
from django.db import transaction

from exchange.core.redis import get_redis

logger = logging.getLogger(__name__)

GROUP = "matcher"
NEW, CANCEL, CANCEL_ALL, AMEND, STATUS = "new", "cancel", "cancel_all", "amend", "status"
COMMAND_KINDS = (NEW, CANCEL, CANCEL_ALL, AMEND, STATUS)


def stream_key(symbol: str) -> str:
    return f"exchange:commands:{symbol}"


def heartbeat_key(symbol: str) -> str:
    return f"exchange:matcher:{symbol}"


def depth_key(symbol: str) -> str:
    return f"exchange:depth:{symbol}"


def command_fields(kind: str, row_id: int) -> dict:
    assert kind in COMMAND_KINDS, kind
    return {"c": kind, "id": str(row_id)}


def command_enqueue_on_commit(symbol: str, kind: str, row_id: int) -> None:
    """XADD the command once the surrounding transaction has committed.

    If Redis refuses, the command is not lost: its row is committed, and the
    matcher's sweep finds it in the database.
    """

    def enqueue():
        try:
            get_redis().xadd(stream_key(symbol), command_fields(kind, row_id))
        except redis.RedisError as exc:
            logger.warning("XADD failed; the matcher's sweep will pick the command up from the database",
                           extra={"symbol": symbol, "command": kind, "row_id": row_id, "error": str(exc)})

    transaction.on_commit(enqueue)


def heartbeat_write(symbol: str, *, sequence: int, pid: int, backlog: int, last_price: str | None = None,
                    best_bid: str | None = None, best_ask: str | None = None, client=None) -> None:
    """The matcher's heartbeat, which also carries the reference prices new orders are checked
    against (last trade, best bid, best ask: decimal strings or None), so that order entry
    learns whether the matcher is alive and where the market is from one small key.

    ``client`` may be a pipeline, to send it with other writes."""
    (client or get_redis()).set(
        heartbeat_key(symbol),
        json.dumps({"at": time.time(), "sequence": sequence, "pid": pid, "backlog": backlog,
                    "last_price": last_price, "best_bid": best_bid, "best_ask": best_ask}),
        ex=max(10, int(settings.MATCHER_STALE_AFTER_S * 3)),
    )


def heartbeat_read(symbol: str) -> dict | None:
    raw = get_redis().get(heartbeat_key(symbol))
    return json.loads(raw) if raw else None


@dataclass(frozen=True, slots=True)
class Pulse:
    """A market's heartbeat as order entry reads it."""

    at: float
    last_price: Decimal | None
    best_bid: Decimal | None
    best_ask: Decimal | None

    def alive(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) - self.at <= settings.MATCHER_STALE_AFTER_S


def pulse_parse(raw: bytes | str | None) -> Pulse | None:
    """The heartbeat value as a Pulse; None when there is none (the matcher never beat, or long ago)."""
    if not raw:
        return None
    beat = json.loads(raw)

    def price(name):
        value = beat.get(name)
        return None if value is None else Decimal(value)

    return Pulse(beat["at"], price("last_price"), price("best_bid"), price("best_ask"))


def matcher_alive(symbol: str) -> bool:
    pulse = pulse_parse(get_redis().get(heartbeat_key(symbol)))
    return pulse is not None and pulse.alive()
