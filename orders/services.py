"""Placing, cancelling and amending orders: the API side of the order flow.

Each service validates, then in ONE database transaction writes the request
(and holds or adds funds), then, after commit, enqueues a reference to it on
the market's command stream. The market's matcher applies it in sequence
with matching. Nothing here changes what the matcher owns (status, fills).

Each transaction also writes its outbox event (``order.accepted``,
``order.cancel_requested``, ``order.amend_requested``; the ledger adds
``balance.changed``), see docs/EVENTS.md.

Row locks: an order row before any ledger account, and several order rows in
ascending id order; the matcher follows the same order, so the API and the
matchers never deadlock.
"""

from __future__ import annotations

from decimal import Decimal

from django.db import connection, transaction
from django.http import Http404

from exchange.audit import actions
from exchange.audit.services import audit_log_record, audit_origin
from exchange.core import localcache
from exchange.core.errors import ApplicationError
from exchange.core.redis import get_redis
from exchange.live.publish import order_accepted_on_commit
from exchange.models import Market
from exchange.outbox.models import Topic
from exchange.outbox.services import outbox_emit
from exchange.selectors import market_get_cached
from matching import stream
from matching.models import MarketState
from orders import entry
from orders.models import RESTING_STATUSES, Order, OrderAmendment, hold_reference
from orders.rules import EXACT, OrderRequest, Reference, amend_check, amend_hold_needed
from risk.pretrade import cancel_check, order_amend_check, order_pre_trade_check
from wallet.fees import fee_rates_cached
from wallet.selectors import hold_remaining
from wallet.services import hold_increase


def market_for_trading(*, symbol: str) -> Market:
    """The market named ``symbol`` (case-insensitive, from this process's cache), or 400 UNKNOWN_MARKET."""
    try:
        return market_get_cached(symbol=symbol)
    except Http404:
        raise ApplicationError("UNKNOWN_MARKET", f"There is no market {str(symbol)[:40]!r}.", field="market") from None


def market_pulse(market: Market) -> stream.Pulse | None:
    return stream.pulse_parse(get_redis().get(stream.heartbeat_key(market.symbol)))


def market_reference(*, market: Market, pulse: stream.Pulse | None) -> Reference:
    """The prices an order is checked against (``entry.reference_of``); without a
    heartbeat, the last trade price from the database."""
    fallback = None
    if pulse is None:
        fallback = MarketState.objects.filter(market=market).values_list("last_price", flat=True).first()
    return entry.reference_of(pulse, last_price_fallback=fallback)


def _existing(*, user, request: OrderRequest) -> dict | None:
    """The row of the order already placed with the request's client_order_id, if any."""
    if not request.client_order_id:
        return None
    return Order.objects.filter(user=user, client_order_id=request.client_order_id).values().first()


def _order_from_row(row: dict, market: Market) -> Order:
    order = Order(**{name: row[name] for name in _ORDER_ATTNAMES})
    order.market = market
    return order


_ORDER_ATTNAMES = tuple(field.attname for field in Order._meta.concrete_fields)


def order_place(*, user, symbol: str, request: OrderRequest, audit: dict | None = None) -> tuple[Order, bool]:
    """Accept an order: returns ``(order, created)``; ``created`` is False for a
    repeat of an earlier request with the same client_order_id (whatever the
    market's state now). ``audit`` (``audit_context(request)``) says who asks:
    the address and API key are recorded with the order and in its
    ``PLACE_ORDER`` audit row. One statement writes everything
    (``orders.entry``); the command is enqueued after commit."""
    localcache.refresh()
    market = market_for_trading(symbol=symbol)
    try:
        pulse = market_pulse(market)
        reference = market_reference(market=market, pulse=pulse)
        prepared = entry.placement_prepare(
            user_id=user.pk, market=market, request=request, reference=reference,
            pulse=pulse, fees=fee_rates_cached(user=user, market=market), origin=entry.Origin.of(audit))
        # Reserved in the risk counters now; given back below if the database does not place the order.
        reservation = order_pre_trade_check(user=user, market=market, order=prepared.checked, reference=reference,
                                            client_order_id=prepared.client_order_id)
    except ApplicationError:
        # A retry of an order accepted earlier gets that order, whatever changed since.
        existing = _existing(user=user, request=request)
        if existing is None:
            raise
        return _order_from_row(entry.existing_outcome(existing, request, market), market), False
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute(entry.PLACE_SQL, prepared.params)
                row = dict(zip([column.name for column in cursor.description], cursor.fetchone()))
            outcome = entry.placement_outcome(prepared, row)
            order = _order_from_row(outcome.order, market)
            if outcome.created:
                order_accepted_on_commit(order)  # live: PENDING order and held balance, before the command is enqueued
                stream.command_enqueue_on_commit(market.symbol, stream.NEW, order.pk)
    except BaseException:
        reservation.release()
        raise
    if not outcome.created:
        reservation.release()
    return order, outcome.created


def _row(cursor) -> dict:
    return dict(zip([column.name for column in cursor.description], cursor.fetchone()))


def order_cancel(*, user, order_id: int, audit: dict | None = None) -> Order:
    """Ask the matcher to cancel one of ``user``'s open orders (``entry.CANCEL_SQL``; its first
    request writes a ``CANCEL_ORDER`` audit row naming who asked, from ``audit``)."""
    if not 0 < order_id <= entry.BIGINT_MAX:
        raise entry.order_not_found()
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(entry.CANCEL_SQL, [user.pk, order_id, *entry.Origin.of(audit).cancel_params()])
            row = entry.cancel_outcome(_row(cursor))
        stream.command_enqueue_on_commit(row["symbol"], stream.CANCEL, order_id)
    order = Order(**{name: row[name] for name in _ORDER_ATTNAMES})
    order.market = market_get_cached(symbol=row["symbol"])
    return order


def orders_cancel_all(*, user, symbol: str, audit: dict | None = None) -> int:
    """Ask the matcher to cancel every open order of ``user`` in a market; returns how many
    (a ``CANCEL_ORDER`` audit row for each order flagged now)."""
    localcache.refresh()
    market = market_for_trading(symbol=symbol)
    if market.status == Market.Status.HALTED:
        raise entry.market_halted_for_cancels()
    cancel_check(user=user)
    return orders_cancel_all_request(user=user, market=market, audit=audit)


def orders_cancel_all_request(*, user, market: Market, audit: dict | None = None) -> int:
    """Flag every open order of ``user`` in ``market`` for cancellation and enqueue the
    CANCEL_ALL command; returns how many. Also the kill switch's (risk: freezing a user)."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(entry.CANCEL_ALL_SQL,
                           [user.pk, market.id, market.symbol, *entry.Origin.of(audit).cancel_params()])
            (count,) = cursor.fetchone()
        if count:
            stream.command_enqueue_on_commit(market.symbol, stream.CANCEL_ALL, user.pk)
    return count


def order_amend(*, user, order_id: int, price: Decimal | None, quantity: Decimal | None,
                audit: dict | None = None) -> OrderAmendment:
    """``_order_amend``; what its risk check reserved is given back if the amendment is refused."""
    reservations = []
    try:
        return _order_amend(user=user, order_id=order_id, price=price, quantity=quantity, audit=audit,
                            reservations=reservations)
    except BaseException:
        for reservation in reservations:  # the risk counters' part of a refused amendment
            reservation.release()
        raise


def _order_amend(*, user, order_id: int, price: Decimal | None, quantity: Decimal | None, audit: dict | None,
                 reservations: list) -> OrderAmendment:
    """Ask the matcher to change a resting order's price and/or total quantity.

    The amendment records absolute terms (what was left unchanged is filled in
    from the order now), and one amendment at a time may wait for the matcher.
    The order's hold is topped up here to cover both its current terms and the
    new ones whatever fills first (``rules.amend_hold_needed``); the matcher
    releases what the order no longer needs once it applies or rejects the
    change.

    Like placement, and unlike a cancel, an amendment needs a live matcher
    (503 MATCHER_UNAVAILABLE otherwise): it is new trading intent, may hold
    more funds, and applied minutes later at recovery it could trade at a
    price the market has left. A cancel only ever reduces exposure, so it is
    recorded even then and applied first thing when the matcher returns.
    """
    with transaction.atomic():
        order = Order.objects.select_for_update(of=("self",)).filter(pk=order_id, user=user).select_related(
            "market__base", "market__quote").first()
        if order is None:
            raise ApplicationError("ORDER_NOT_FOUND", "No such order.", status_code=404)
        if order.status not in RESTING_STATUSES:
            raise ApplicationError(
                "ORDER_NOT_RESTING", f"Only orders resting in the book can be amended; this one is {order.status}.",
                status_code=409,
            )
        if OrderAmendment.objects.filter(order=order, status=OrderAmendment.Status.REQUESTED).exists():
            raise ApplicationError(
                "AMENDMENT_PENDING", "An earlier amendment of this order is still being applied; retry shortly.",
                status_code=409,
            )
        market = order.market
        pulse = market_pulse(market)
        reference = market_reference(market=market, pulse=pulse)
        new_price, new_quantity = amend_check(
            market=market, order=order, price=price, quantity=quantity, reference=reference,
        )
        entry.require_matcher(market, pulse)
        reservations.append(order_amend_check(user=user, order=order, new_price=new_price, new_quantity=new_quantity,
                                              reference=reference))
        needed = amend_hold_needed(side=order.side, price=order.price, quantity=order.quantity,
                                   filled_quantity=order.filled_quantity, new_price=new_price, new_quantity=new_quantity)
        # The hold changes only in the matcher's batches, which lock this order
        # row first: with the row locked here, what it holds is stable.
        held = hold_remaining(reference=hold_reference(order.pk))
        extra = max(Decimal(0), EXACT.subtract(needed, held))
        if extra:
            hold_increase(reference=hold_reference(order.pk), amount=extra)
        amendment = OrderAmendment.objects.create(
            order=order,
            new_price=new_price,
            new_quantity=new_quantity,
            extra_hold=extra,
        )
        outbox_emit(topic=Topic.ORDERS, key=market.symbol, event_type="order.amend_requested",
                    payload={"order_id": order.pk, "client_order_id": order.client_order_id,
                             "user_id": order.user_id, "market": market.symbol, "amendment_id": amendment.pk,
                             "new_price": new_price, "new_quantity": new_quantity, "extra_hold": extra,
                             "requested_at": amendment.created_at})
        audit_log_record(action=actions.AMEND_ORDER, object_type="orders.order", object_id=order.pk,
                         market=market.symbol, before={"price": order.price, "quantity": order.quantity},
                         after={"amendment_id": amendment.pk, "price": new_price, "quantity": new_quantity,
                                "extra_hold": extra},
                         subject_user=user, **audit_origin(audit, user=user))
        stream.command_enqueue_on_commit(market.symbol, stream.AMEND, amendment.pk)
    return amendment


