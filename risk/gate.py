"""The matcher's admission gate: kill switches acting on orders already queued in a stream.

``admission_refusals(user_ids, market_id=)`` is consulted once per matcher
batch with the users whose NEW orders the batch holds, and answers
``{user_id: reason}`` for those whose new orders must be REJECTED (their
holds released) instead of entering the book:

- every user while the exchange is halted: ``RISK_EXCHANGE_HALTED``;
- a frozen user: ``RISK_USER_FROZEN``; a cancel-only user: ``RISK_USER_CANCEL_ONLY``;
- every user of a market halted by a kill switch whose status change the
  matcher has not reached yet: ``MARKET_HALTED``.

Cost: a dict lookup per user over the per-process restrictions cache
(risk/limits.py), whose change token is read at most every 0.25 s (one Redis
GET); a batch in which nobody is refused costs nothing more. If Redis cannot
be read the cached restrictions are used (they expire after a minute): the
matcher keeps matching rather than fail its batches.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Iterable

import redis

from exchange.core import localcache
from risk import metrics
from risk.limits import restrictions

logger = logging.getLogger(__name__)


def admission_refusals(user_ids: Iterable[int], *, market_id: int | None = None) -> dict[int, str]:
    user_ids = set(user_ids)
    if not user_ids:
        return {}
    try:
        localcache.refresh()
    except redis.RedisError:
        logger.warning("admission gate: the configuration token cannot be read; using cached restrictions")
    state = restrictions()
    if state.exchange_halted:
        refusals = dict.fromkeys(user_ids, "RISK_EXCHANGE_HALTED")
    else:
        refusals = {}
        for user_id in user_ids:
            user_state = state.user_state(user_id)
            if user_state != "ACTIVE":
                refusals[user_id] = f"RISK_USER_{user_state}"
        if market_id is not None and market_id in state.halted_markets:
            refusals = {user_id: refusals.get(user_id, "MARKET_HALTED") for user_id in user_ids}
    for code, count in Counter(refusals.values()).items():
        metrics.reject_count(code, count)
    return refusals
