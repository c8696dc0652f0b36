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

import uuid
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import Http404
from django.utils import timezone

from exchange.core.errors import ApplicationError, ServiceUnavailable
from exchange.core.redis import get_redis
from exchange.live.publish import order_accepted_on_commit
from exchange.models import Market
from exchange.outbox.models import Topic
from exchange.outbox.services import outbox_emit
from exchange.selectors import market_get
from matching import stream
from matching.models import MarketState
from orders.models import OPEN_STATUSES, RESTING_STATUSES, Order, OrderAmendment, OrderStatus, hold_reference
from orders.models import MARKET_LIKE_TYPES, TimeInForce
from orders.rules import OrderRequest, Reference, amend_check, amend_hold_needed, order_check
from risk.pretrade import cancel_check, order_amend_check, order_pre_trade_check
from wallet.fees import fee_rates_for
from wallet.selectors import hold_remaining
from wallet.services import funds_hold, hold_increase


def market_for_trading(*, symbol: str) -> Market:
    """The market named ``symbol`` (case-insensitive), or 400 UNKNOWN_MARKET."""
    try:
        return market_get(symbol=symbol)
    except Http404:
        raise ApplicationError("UNKNOWN_MARKET", f"There is no market {str(symbol)[:40]!r}.", field="market") from None


def market_reference(*, market: Market, pulse: stream.Pulse | None) -> Reference:
    """The prices an order is checked against: the last trade, best bid and ask, as the market's
    matcher last published them with its heartbeat; without a heartbeat (no matcher has run
    for a while) only the last trade price, from the database."""
    if pulse is not None:
        return Reference(last_price=pulse.last_price, best_bid=pulse.best_bid, best_ask=pulse.best_ask)
    return Reference(last_price=MarketState.objects.filter(market=market).values_list("last_price", flat=True).first())


def market_pulse(market: Market) -> stream.Pulse | None:
    return stream.pulse_parse(get_redis().get(stream.heartbeat_key(market.symbol)))


def _require_matcher(market: Market, pulse: stream.Pulse | None) -> None:
    """Refuse (503) rather than accept orders that no matcher would sequence now."""
    if settings.ORDERS_REQUIRE_LIVE_MATCHER and (pulse is None or not pulse.alive()):
        raise ServiceUnavailable(
            f"The matching engine for {market.symbol} is not running; retry shortly.", code="MATCHER_UNAVAILABLE"
        )


def _same_request(order: Order, request: OrderRequest, market: Market) -> bool:
    """Whether ``request`` asks for what ``order`` was placed with: every
    field, including the time in force (left out: GTC, as at placement, for
    a non-market order) and the self-trade prevention mode (left out: any,
    since the market's default may have changed since the first request)."""

    def same(a, b):
        return (a is None and b is None) or (a is not None and b is not None and Decimal(a) == Decimal(b))

    time_in_force = request.time_in_force
    if time_in_force is None and request.type not in MARKET_LIKE_TYPES:
        time_in_force = TimeInForce.GTC
    return (
        order.market_id == market.id
        and order.side == request.side
        and order.type == request.type
        and same(order.quantity, request.quantity)
        and same(order.quote_quantity, request.quote_quantity)
        and same(order.price, request.price)
        and same(order.stop_price, request.stop_price)
        and order.time_in_force == time_in_force
        and (request.stp_mode is None or order.stp_mode == request.stp_mode)
    )


def _replay(*, user, market: Market, request: OrderRequest) -> Order | None:
    """The order already placed with this client_order_id, if any (idempotency)."""
    if not request.client_order_id:
        return None
    existing = Order.objects.filter(user=user, client_order_id=request.client_order_id).first()
    if existing is not None and not _same_request(existing, request, market):
        raise ApplicationError(
            "CLIENT_ORDER_ID_REUSED",
            "client_order_id was already used for a different order.",
            field="client_order_id",
            status_code=409,
        )
    return existing


def order_place(*, user, symbol: str, request: OrderRequest, client_ip: str | None = None,
                api_key=None) -> tuple[Order, bool]:
    """Accept an order: returns ``(order, created)``; ``created`` is False for a
    repeat of an earlier request with the same client_order_id. ``client_ip``
    and ``api_key`` (None for a session) are recorded with the order."""
    market = market_for_trading(symbol=symbol)
    existing = _replay(user=user, market=market, request=request)
    if existing is not None:
        return existing, False
    pulse = market_pulse(market)
    reference = market_reference(market=market, pulse=pulse)
    checked = order_check(market=market, request=request, reference=reference)
    _require_matcher(market, pulse)
    client_order_id = request.client_order_id or uuid.uuid4().hex
    fees = fee_rates_for(user=user, market=market)
    # Reserved in the risk counters now; given back below if the database refuses the order.
    reservation = order_pre_trade_check(user=user, market=market, order=checked, reference=reference,
                                        client_order_id=client_order_id)
    order = Order(
        user=user,
        market=market,
        client_order_id=client_order_id,
        side=checked.side,
        type=checked.type,
        time_in_force=checked.time_in_force,
        price=checked.price,
        stop_price=checked.stop_price,
        quantity=checked.quantity,
        quote_quantity=checked.quote_quantity,
        stp_mode=checked.stp_mode,
        hold_amount=checked.hold_amount,
        maker_fee_rate=fees.maker,
        taker_fee_rate=fees.taker,
        client_ip=client_ip or None,
        api_key=api_key,
    )
    try:
        with transaction.atomic():
            order.save(force_insert=True)
            funds_hold(
                user=user,
                asset=market.quote if checked.hold_asset_is_quote else market.base,
                amount=checked.hold_amount,
                reference=hold_reference(order.pk),
                memo=f"{checked.side} {checked.type} {market.symbol}",
            )
            order_accepted_on_commit(order)  # live: PENDING order and held balance, before the command is enqueued
            outbox_emit(topic=Topic.ORDERS, key=market.symbol, event_type="order.accepted",
                        payload=_order_accepted_payload(order, market))
            stream.command_enqueue_on_commit(market.symbol, stream.NEW, order.pk)
    except IntegrityError:
        # Two requests with the same client_order_id raced; the other won.
        reservation.release()
        existing = _replay(user=user, market=market, request=request)
        if existing is None:
            raise
        return existing, False
    except BaseException:
        reservation.release()
        raise
    return order, True


def _order_accepted_payload(order: Order, market: Market) -> dict:
    return {
        "order_id": order.pk, "client_order_id": order.client_order_id, "user_id": order.user_id,
        "market": market.symbol, "side": order.side, "type": order.type, "time_in_force": order.time_in_force,
        "price": order.price, "stop_price": order.stop_price, "quantity": order.quantity,
        "quote_quantity": order.quote_quantity, "stp_mode": order.stp_mode, "hold_amount": order.hold_amount,
        "maker_fee_rate": order.maker_fee_rate, "taker_fee_rate": order.taker_fee_rate,
        "status": order.status, "created_at": order.created_at,
    }


def _cancel_requested(*, market: Market, order_id: int, user_id: int, client_order_id: str, requested_at) -> None:
    outbox_emit(topic=Topic.ORDERS, key=market.symbol, event_type="order.cancel_requested",
                payload={"order_id": order_id, "client_order_id": client_order_id, "user_id": user_id,
                         "market": market.symbol, "requested_at": requested_at})


def order_cancel(*, user, order_id: int) -> Order:
    """Ask the matcher to cancel one of ``user``'s open orders."""
    with transaction.atomic():
        order = Order.objects.select_for_update(of=("self",)).filter(pk=order_id, user=user).select_related("market").first()
        if order is None:
            raise ApplicationError("ORDER_NOT_FOUND", "No such order.", status_code=404)
        if order.status not in OPEN_STATUSES:
            raise ApplicationError(
                "ORDER_NOT_OPEN", f"The order is already {order.status}.", status_code=409, extra={"status": order.status}
            )
        if order.market.status == Market.Status.HALTED:
            raise ApplicationError("MARKET_HALTED", "The market is halted: cancels resume with trading.", status_code=409)
        if order.cancel_requested_at is None:
            order.cancel_requested_at = timezone.now()
            order.save(update_fields=["cancel_requested_at", "updated_at"])
            _cancel_requested(market=order.market, order_id=order.pk, user_id=order.user_id,
                              client_order_id=order.client_order_id, requested_at=order.cancel_requested_at)
        stream.command_enqueue_on_commit(order.market.symbol, stream.CANCEL, order.pk)
    return order


def orders_cancel_all(*, user, symbol: str) -> int:
    """Ask the matcher to cancel every open order of ``user`` in a market; returns how many."""
    market = market_for_trading(symbol=symbol)
    if market.status == Market.Status.HALTED:
        raise ApplicationError("MARKET_HALTED", "The market is halted: cancels resume with trading.", status_code=409)
    cancel_check(user=user)
    return orders_cancel_all_request(user=user, market=market)


def orders_cancel_all_request(*, user, market: Market) -> int:
    """Flag every open order of ``user`` in ``market`` for cancellation and enqueue the
    CANCEL_ALL command; returns how many. Also the kill switch's (risk: freezing a user)."""
    with transaction.atomic():
        rows = list(
            Order.objects.select_for_update()
            .filter(user=user, market=market, status__in=OPEN_STATUSES)
            .order_by("id")
            .values_list("id", "client_order_id", "cancel_requested_at")
        )
        ids = [row[0] for row in rows]
        now = timezone.now()
        Order.objects.filter(id__in=ids, cancel_requested_at__isnull=True).update(
            cancel_requested_at=now, updated_at=now
        )
        for order_id, client_order_id, requested_at in rows:
            if requested_at is None:
                _cancel_requested(market=market, order_id=order_id, user_id=user.pk,
                                  client_order_id=client_order_id, requested_at=now)
        if ids:
            stream.command_enqueue_on_commit(market.symbol, stream.CANCEL_ALL, user.pk)
    return len(ids)


def order_amend(*, user, order_id: int, price: Decimal | None, quantity: Decimal | None) -> OrderAmendment:
    """``_order_amend``; what its risk check reserved is given back if the amendment is refused."""
    reservations = []
    try:
        return _order_amend(user=user, order_id=order_id, price=price, quantity=quantity, reservations=reservations)
    except BaseException:
        for reservation in reservations:  # the risk counters' part of a refused amendment
            reservation.release()
        raise


def _order_amend(*, user, order_id: int, price: Decimal | None, quantity: Decimal | None,
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
        _require_matcher(market, pulse)
        reservations.append(order_amend_check(user=user, order=order, new_price=new_price, new_quantity=new_quantity,
                                              reference=reference))
        needed = amend_hold_needed(side=order.side, price=order.price, quantity=order.quantity,
                                   filled_quantity=order.filled_quantity, new_price=new_price, new_quantity=new_quantity)
        # The hold changes only in the matcher's batches, which lock this order
        # row first: with the row locked here, what it holds is stable.
        held = hold_remaining(reference=hold_reference(order.pk))
        extra = max(Decimal(0), needed - held)
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
        stream.command_enqueue_on_commit(market.symbol, stream.AMEND, amendment.pk)
    return amendment


