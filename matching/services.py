"""Operator requests that go through a market's matcher."""

from __future__ import annotations

from django.db import transaction

from exchange.audit import actions
from exchange.audit.services import audit_log_record, audit_origin
from exchange.core.errors import ApplicationError
from exchange.models import Market
from exchange.outbox.models import Topic
from exchange.outbox.services import outbox_emit
from matching import stream
from matching.models import MarketStatusChange


@transaction.atomic
def market_status_request(*, market: Market, new_status: str, actor, reason: str,
                          audit: dict | None = None) -> MarketStatusChange:
    """Ask the market's matcher to change its status (halt, resume, cancel-only,
    post-only). The matcher applies it in sequence with orders; until then
    the market keeps its current status.

    The request is audited here (MARKET_HALT, MARKET_RESUME, ...; ``audit``:
    the request's ``audit_context``); the matcher's applying or refusing it
    is audited by the database (MARKET_STATUS_APPLIED / _REJECTED, a trigger
    on this request's row, migration exchange 0007)."""
    if new_status not in Market.Status.values:
        raise ApplicationError("INVALID_STATUS", f"Unknown market status {new_status!r}.", field="new_status")
    if not reason or not reason.strip():
        raise ApplicationError("REASON_REQUIRED", "Say why the market's status changes.", field="reason")
    change = MarketStatusChange.objects.create(
        market=market, new_status=new_status, previous_status=market.status, reason=reason.strip(), requested_by=actor)
    outbox_emit(topic=Topic.MARKETS, key=market.symbol, event_type="market.status_change_requested",
                payload={"market": market.symbol, "change_id": change.pk, "requested_status": new_status,
                         "status": market.status, "reason": change.reason,
                         "requested_by": getattr(actor, "pk", None), "requested_at": change.created_at})
    audit_log_record(action=actions.MARKET_STATUS_ACTIONS[new_status], object_type="matching.marketstatuschange",
                     object_id=change.pk, market=market.symbol, before={"status": market.status},
                     after={"requested_status": new_status, "reason": change.reason},
                     **audit_origin(audit, staff=actor))
    stream.command_enqueue_on_commit(market.symbol, stream.STATUS, change.pk)
    return change
