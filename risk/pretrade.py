"""The pre-trade check: sans-I/O, so that it fits on the order-entry hot path.

Cost per order: pure CPU (a few microseconds: cached limits and restrictions,
Decimal comparisons) plus ONE Redis script call that the caller sends in the
pipeline it sends anyway. No database access, except when a per-process cache
is cold (one query, then served from memory) or the user's Redis counters are
cold (``CountersCold``: the caller rebuilds them, once).

An asynchronous order path uses the pieces::

    plan = pre_trade_plan(user_id=..., kyc_tier=..., market=market, side=..., order_type=...,
                          quantity=..., quote_quantity=..., price=..., stop_price=..., hold_amount=...,
                          notional=..., reference=reference, now_ms=..., client_order_id=...)
    # raised ApplicationError("RISK_..."/"MARKET_HALTED") already if a static rule is broken
    pipe.evalsha(sha_of(plan.script), len(plan.keys), *plan.keys, *plan.args)   # register plan.script once
    ...
    reservation = plan.verdict(reply)        # ApplicationError, or CountersCold: counters_rebuild() and retry
    ...                                      # the database refuses the order after all?
    pipe.evalsha(sha_of(reservation.release_script), len(reservation.release_keys),
                 *reservation.release_keys, *reservation.release_args)

and ``order_pre_trade_check`` below is the same with the synchronous client,
wired into today's ``orders.services.order_place``.

Rejections (docs/RISK.md): static ones at once, with 400 (the order itself
breaks a limit) or 403/409 (the account or the exchange is stopped); counter
ones from the script's reply, with 409 (429 for the per-second rate). Nothing
is reserved when an order is refused; the refusal is counted for /metrics
(``metrics.reject_count``: one HINCRBY, on refusals only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal

from exchange.core import localcache
from exchange.core.errors import ApplicationError
from orders.models import OrderType, Side
from orders.rules import Reference
from risk import counters, limits as limits_module, metrics
from risk.counters import RELEASE_AMEND, RELEASE_NEW, RESERVE_AMEND, RESERVE_NEW
from risk.limits import EffectiveLimits, to_units


class CountersCold(Exception):
    """The user's counters are not in Redis: rebuild them (``counters.counters_rebuild``) and retry."""

    def __init__(self, user_id: int):
        super().__init__(f"risk counters of user {user_id} are cold")
        self.user_id = user_id


# How each refusal is answered: HTTP status, the field at fault, the limit it names.
_REFUSALS = {
    "RISK_MAX_OPEN_ORDERS": (409, None, "max_open_orders", "You have {used} open orders; the limit is {limit}."),
    "RISK_DAILY_ORDER_COUNT": (409, None, "max_daily_orders",
                               "You placed {used} orders today (UTC); the limit is {limit}."),
    "RISK_ORDER_RATE": (429, None, "max_orders_per_second",
                        "You placed {used} orders this second; the limit is {limit} per second."),
    "RISK_DAILY_NOTIONAL": (409, "quantity", "max_daily_notional",
                            "Orders worth {used} {quote} were placed today (UTC); this one would pass the "
                            "limit of {limit} {quote}."),
    "RISK_MAX_POSITION": (409, "quantity", "max_position",
                          "Your {base} position could reach {used} with your open orders; this order would pass "
                          "the limit of {limit} {base}."),
}


def _refuse(code: str, message: str, *, status: int, field_name: str | None, limits: EffectiveLimits | None = None,
            limit_name: str | None = None, limit_value=None) -> ApplicationError:
    extra = {}
    if limit_name is not None:
        extra = {"limit": limit_name, "limit_value": _text(limit_value), "scope": limits.scopes.get(limit_name)}
    metrics.reject_count(code)
    return ApplicationError(code, message, field=field_name, status_code=status, extra=extra)


def _text(value) -> str:
    return f"{value.normalize():f}" if isinstance(value, Decimal) else str(value)


# --------------------------------------------------------------- static checks


def restrictions_check(*, user_id: int, market_id: int | None, cancel: bool) -> None:
    """The kill switches: the exchange halted, the user frozen or (unless ``cancel``)
    cancel-only, the market halted. Pure CPU over the cached restrictions."""
    state = limits_module.restrictions()
    if state.exchange_halted:
        raise _refuse("RISK_EXCHANGE_HALTED", "The exchange is halted: no orders or cancels are accepted.",
                      status=409, field_name=None)
    user_state = state.user_state(user_id)
    if user_state == "FROZEN":
        raise _refuse("RISK_USER_FROZEN", "Your account is frozen: contact support.", status=403, field_name=None)
    if user_state == "CANCEL_ONLY" and not cancel:
        raise _refuse("RISK_USER_CANCEL_ONLY", "Your account may only cancel orders right now.", status=403,
                      field_name=None)
    if market_id is not None and market_id in state.halted_markets:
        # The halt is sequenced through the matcher (the market's status); this refuses at once meanwhile.
        raise _refuse("MARKET_HALTED", "The market is halted: no orders are accepted.", status=409, field_name="market")


def _band_reference(reference: Reference) -> Decimal | None:
    """The last trade price, else the middle of the best bid and ask."""
    if reference.last_price is not None:
        return reference.last_price
    if reference.best_bid is not None and reference.best_ask is not None:
        return (reference.best_bid + reference.best_ask) / 2
    return None


def static_limits_check(*, limits: EffectiveLimits, order_type: str, quantity: Decimal | None, price: Decimal | None,
                        notional: Decimal, quote_code: str, reference: Reference, quantity_field: str = "quantity") -> None:
    """Limits of the order alone: quantity, value, price band (fat finger). Exactly at a limit passes."""
    if limits.max_order_quantity is not None and quantity is not None and quantity > limits.max_order_quantity:
        raise _refuse("RISK_MAX_ORDER_QUANTITY",
                      f"The order's quantity may be at most {_text(limits.max_order_quantity)}.",
                      status=400, field_name="quantity", limits=limits, limit_name="max_order_quantity",
                      limit_value=limits.max_order_quantity)
    if limits.max_order_notional is not None and notional > limits.max_order_notional:
        raise _refuse("RISK_MAX_ORDER_NOTIONAL",
                      f"The order may be worth at most {_text(limits.max_order_notional)} {quote_code} "
                      f"(this one: {_text(notional)}).",
                      status=400, field_name=quantity_field, limits=limits, limit_name="max_order_notional",
                      limit_value=limits.max_order_notional)
    if limits.price_band is not None and price is not None and order_type in (OrderType.LIMIT, OrderType.LIMIT_MAKER):
        anchor = _band_reference(reference)
        if anchor is not None:
            low, high = anchor * (1 - limits.price_band), anchor * (1 + limits.price_band)
            if not low <= price <= high:
                raise _refuse("RISK_PRICE_BAND",
                              f"The price must lie within {_text(limits.price_band * 100)}% of {_text(anchor)} "
                              f"({_text(low)} to {_text(high)}).",
                              status=400, field_name="price", limits=limits, limit_name="price_band",
                              limit_value=limits.price_band)


# ------------------------------------------------------------------ the plan


@dataclass(slots=True)
class Reservation:
    """What one order reserved in the counters, and how to give it back with ONE script call."""

    release_script: str | None = None
    release_keys: list = field(default_factory=list)
    release_args: list = field(default_factory=list)

    def release(self, client=None) -> None:
        """Undo the reservation (the order was not accepted after all). Idempotent per order."""
        if self.release_script is not None:
            counters.script(self.release_script, client)(keys=self.release_keys, args=self.release_args, client=client)
            self.release_script = None


@dataclass(slots=True)
class Plan:
    """The counter part of the check: ``script`` run with ``keys`` and ``args``, its reply
    judged by ``verdict``."""

    user_id: int
    script: str
    keys: list
    args: list
    limits: EffectiveLimits
    base_code: str
    quote_code: str
    release_script: str
    release_keys: list
    release_args: list
    amend: bool = False

    def verdict(self, reply) -> Reservation:
        """The script's reply: a Reservation, or ApplicationError (nothing reserved), or CountersCold."""
        status = int(reply[0])
        if status == 0:
            args = self.release_args
            if self.amend:
                args = [*args, int(reply[1])]
            return Reservation(self.release_script, self.release_keys, args)
        if status == 1:
            raise CountersCold(self.user_id)
        if status == 3:
            return Reservation()  # a client_order_id still open: the database answers the replay
        code = reply[1].decode() if isinstance(reply[1], bytes) else reply[1]
        http_status, field_name, limit_name, template = _REFUSALS[code]
        limit_value = getattr(self.limits, limit_name)
        used = limits_module.from_units(reply[2]) if limit_name in ("max_daily_notional", "max_position") else int(reply[2])
        message = template.format(used=_text(used), limit=_text(limit_value), base=self.base_code, quote=self.quote_code)
        raise _refuse(code, message, status=http_status, field_name=field_name, limits=self.limits,
                      limit_name=limit_name, limit_value=limit_value)


_day_cache = [-1, ""]  # (second, its UTC day): formatting a day costs more than the rest of a plan


def _day(now_ms: int) -> str:
    second = now_ms // 1000
    if _day_cache[0] != second:
        _day_cache[:] = [second, counters.day_of(second)]
    return _day_cache[1]


def pre_trade_plan(*, user_id: int, kyc_tier: int, market, side: str, order_type: str, quantity: Decimal | None,
                   quote_quantity: Decimal | None, price: Decimal | None, notional: Decimal, reference: Reference,
                   now_ms: int, client_order_id: str, stop_price: Decimal | None = None,
                   hold_amount: Decimal | None = None) -> Plan:
    """Check a new order's restrictions and static limits (raises at once), and plan the one
    script call that checks and reserves its counter limits.

    ``market`` is a Market with its ``base`` and ``quote`` loaded; ``notional`` what the
    order is worth in quote (``counters.order_value``); ``hold_amount`` what it holds
    (needed for a sell by quote amount); ``client_order_id`` the id the order will have.
    """
    restrictions_check(user_id=user_id, market_id=market.id, cancel=False)
    limits = limits_module.limit_book().effective(user_id=user_id, kyc_tier=kyc_tier, market_id=market.id)
    static_limits_check(limits=limits, order_type=order_type, quantity=quantity, price=price, notional=notional,
                        quote_code=market.quote.code, reference=reference,
                        quantity_field="quantity" if quantity is not None else "quote_quantity")
    estimate = stop_price or reference.last_price or (reference.best_ask if side == Side.BUY else reference.best_bid)
    reserved = counters.position_reservation(side=side, quantity=quantity, quote_quantity=quote_quantity,
                                             hold_amount=hold_amount, price_estimate=estimate)
    second = now_ms // 1000
    day = _day(now_ms)
    keys = [counters.counters_key(user_id), counters.open_key(user_id), counters.rate_key(user_id, second)]
    value_units = to_units(notional)
    rate_limited = limits.max_orders_per_second is not None
    return Plan(
        user_id=user_id,
        script=RESERVE_NEW,
        keys=keys,
        args=[day, client_order_id, market.base_id, "b" if side == Side.BUY else "s", to_units(reserved),
              market.quote_id, value_units, *limits.script_args, counters.TTL_MS],
        limits=limits,
        base_code=market.base.code,
        quote_code=market.quote.code,
        release_script=RELEASE_NEW,
        release_keys=keys,
        release_args=[day, client_order_id, market.quote_id, value_units, 1 if rate_limited else 0],
    )


def placement_plan(*, user_id: int, kyc_tier: int, market, order, reference: Reference, client_order_id: str,
                   now_ms: int) -> Plan:
    """``pre_trade_plan`` for an order that met the market's rules (an orders.rules.CheckedOrder),
    valued as ``counters.order_value`` does."""
    estimate = order.stop_price or reference.last_price or (
        reference.best_ask if order.side == Side.BUY else reference.best_bid)
    return pre_trade_plan(
        user_id=user_id, kyc_tier=kyc_tier, market=market, side=order.side, order_type=order.type,
        quantity=order.quantity, quote_quantity=order.quote_quantity, price=order.price, stop_price=order.stop_price,
        hold_amount=order.hold_amount,
        notional=counters.order_value(order_type=order.type, price=order.price, quantity=order.quantity,
                                      quote_quantity=order.quote_quantity, price_estimate=estimate),
        reference=reference, now_ms=now_ms, client_order_id=client_order_id)


def amend_plan(*, user_id: int, kyc_tier: int, market, order_type: str, client_order_id: str, old_price: Decimal,
               old_quantity: Decimal, new_price: Decimal, new_quantity: Decimal, reference: Reference,
               now_ms: int) -> Plan:
    """The same for an amendment of a resting limit order to (new_price, new_quantity): the
    restrictions, the static limits on the new terms, and a script that reserves what the
    new terms add (position, value); a smaller order reserves nothing more and gives
    nothing back until it ends."""
    restrictions_check(user_id=user_id, market_id=market.id, cancel=False)
    limits = limits_module.limit_book().effective(user_id=user_id, kyc_tier=kyc_tier, market_id=market.id)
    new_value = new_price * new_quantity
    static_limits_check(limits=limits, order_type=order_type, quantity=new_quantity,
                        price=new_price if new_price != old_price else None, notional=new_value,
                        quote_code=market.quote.code, reference=reference)
    extra_position = to_units(max(Decimal(0), new_quantity - old_quantity))
    extra_value = to_units(max(Decimal(0), new_value - old_price * old_quantity))
    keys = [counters.counters_key(user_id), counters.open_key(user_id)]
    day = _day(now_ms)
    return Plan(
        user_id=user_id,
        script=RESERVE_AMEND,
        keys=keys,
        args=[day, client_order_id, extra_position, market.quote_id, extra_value, limits.max_daily_notional_units,
              limits.max_position_units, counters.TTL_MS],
        limits=limits,
        base_code=market.base.code,
        quote_code=market.quote.code,
        release_script=RELEASE_AMEND,
        release_keys=keys,
        release_args=[day, client_order_id, extra_position, market.quote_id, extra_value],
        amend=True,
    )


# --------------------------------------------------- the synchronous convenience


def run(plan: Plan, client=None) -> Reservation:
    """Run ``plan``'s script with the synchronous client; rebuild cold counters once."""
    client = client or counters.get_redis()
    for attempt in range(2):
        reply = counters.script(plan.script, client)(keys=plan.keys, args=plan.args, client=client)
        try:
            return plan.verdict(reply)
        except CountersCold:
            if attempt:
                raise
            counters.counters_rebuild(user_id=plan.user_id, client=client)
    raise AssertionError("unreachable")


def order_pre_trade_check(*, user, market, order, reference: Reference, client_order_id: str,
                          now_ms: int | None = None) -> Reservation:
    """Check and reserve a new order (an orders.rules.CheckedOrder) with the synchronous Redis client."""
    localcache.refresh()
    return run(placement_plan(user_id=user.pk, kyc_tier=limits_module.kyc_tier(user.pk), market=market, order=order,
                              reference=reference, client_order_id=client_order_id,
                              now_ms=now_ms if now_ms is not None else time.time_ns() // 1_000_000))


def order_amend_check(*, user, order, new_price: Decimal, new_quantity: Decimal, reference: Reference,
                      now_ms: int | None = None) -> Reservation:
    """Check and reserve an amendment of ``order`` (an orders.models.Order, market loaded)."""
    localcache.refresh()
    plan = amend_plan(
        user_id=user.pk, kyc_tier=limits_module.kyc_tier(user.pk), market=order.market, order_type=order.type,
        client_order_id=order.client_order_id, old_price=order.price, old_quantity=order.quantity,
        new_price=new_price, new_quantity=new_quantity, reference=reference,
        now_ms=now_ms if now_ms is not None else time.time_ns() // 1_000_000)
    return run(plan)


def cancel_check(*, user) -> None:
    """Whether ``user`` may cancel: refused when frozen or the exchange is halted."""
    localcache.refresh()
    restrictions_check(user_id=user.pk, market_id=None, cancel=True)
