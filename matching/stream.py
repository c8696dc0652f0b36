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


def heartbeat_write(symbol: str, *, sequence: int, pid: int, backlog: int) -> None:
    get_redis().set(
        heartbeat_key(symbol),
        json.dumps({"at": time.time(), "sequence": sequence, "pid": pid, "backlog": backlog}),
        ex=max(10, int(settings.MATCHER_STALE_AFTER_S * 3)),
    )


def heartbeat_read(symbol: str) -> dict | None:
    raw = get_redis().get(heartbeat_key(symbol))
    return json.loads(raw) if raw else None


def matcher_alive(symbol: str) -> bool:
    beat = heartbeat_read(symbol)
    return bool(beat) and time.time() - beat["at"] <= settings.MATCHER_STALE_AFTER_S
