"""Pre-trade risk: the synchronous check every order passes before funds are held.

Until limits and kill switches are built (the risk issue), the check accepts
everything; placement already calls it at the right point of the flow, so
adding a rule here needs no change elsewhere. A rule rejects by raising
ApplicationError with a stable code (e.g. MAX_OPEN_ORDERS_EXCEEDED).
"""

from __future__ import annotations


def order_pre_trade_check(*, user, market, order) -> None:
    """Raise ApplicationError to refuse ``order`` (an orders.rules.CheckedOrder)."""
    return None
