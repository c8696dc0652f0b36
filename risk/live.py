"""A user's trading state on the WebSocket channel ``user.account`` (docs/LIVE.md).

The state is ``ACTIVE``, ``CANCEL_ONLY`` or ``FROZEN`` (plus whether the whole
exchange is halted). It is sent when the client subscribes and again after a
kill switch on the user is turned on or off (after its commit). The reason an
operator gave is not sent: it is internal.
"""

from __future__ import annotations

import logging

from exchange.live import protocol

logger = logging.getLogger(__name__)


def account_state(user_id: int) -> dict:
    """What ``user.account`` carries, read from the database (not the caches: it follows a change)."""
    from risk.models import TradingRestriction

    kinds = TradingRestriction.Kind
    active = set(TradingRestriction.objects.filter(lifted_at__isnull=True).filter(
        user_id=user_id).values_list("kind", flat=True))
    halted = TradingRestriction.objects.filter(kind=kinds.EXCHANGE_HALTED, lifted_at__isnull=True).exists()
    status = "FROZEN" if kinds.USER_FROZEN in active else "CANCEL_ONLY" if kinds.USER_CANCEL_ONLY in active else "ACTIVE"
    return {"status": status, "exchange_halted": halted}


def account_state_publish(user_id: int) -> None:
    """Send the user's state to their connections, if any. Best-effort: the change is committed."""
    try:
        from exchange.live.fanout import group_sender

        group = protocol.user_group(user_id)
        sender = group_sender()
        members = sender.members([group])
        if members:
            sender.send([(group, {"type": protocol.LAYER_ACCOUNT, "user_id": user_id,
                                  "data": account_state(user_id)})], members)
    except Exception as exc:  # noqa: BLE001
        logger.warning("live account state not sent", extra={"user_id": user_id, "error": repr(exc)})
