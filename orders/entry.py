"""Order entry: the steps every door shares, without I/O.

Two doors place and cancel orders: the Django views (sessions, and the
reference implementation of the API's contract) through ``orders.services``,
and the fast path for signed requests (``orders.fastpath``), which is async.
Both run the same steps; only how they talk to PostgreSQL and Redis differs.

Placing:

1. ``placement_prepare``: the market's rules (``orders.rules.order_check``),
   the matcher being alive, and the arguments of the placing statement;
2. ``PLACE_SQL`` with ``prepared.params``: one statement, one round trip,
   that holds the funds, inserts the order and writes its events (the
   function ``orders_order_place``, migration 0004);
3. ``placement_outcome``: what that statement answered, as the order row, or
   the API error (insufficient funds, a client_order_id reused for another
   order).

Cancelling one order: ``CANCEL_SQL`` (``orders_order_cancel``), then
``cancel_outcome``; all of a user's orders in a market: ``CANCEL_ALL_SQL``.

After commit the caller enqueues the command on the market's stream.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings

from exchange.audit.services import USER_AGENT_LENGTH_MAX
from exchange.core.errors import ApplicationError, ServiceUnavailable
from exchange.core.fields import decimal_to_str
from exchange.core.net import parse_ip
from exchange.models import Market
from matching.stream import Pulse
from orders.models import MARKET_LIKE_TYPES, TimeInForce
from orders.rules import CheckedOrder, OrderRequest, Reference, order_check
from wallet.fees import FeeRates

# Explicit types: a client that binds parameters on the server (psycopg's
# async path) sends Python ints as int2/int4/int8 by size.
PLACE_SQL = (
    "SELECT r.outcome, (r.placed).*, r.available, r.held, r.asset_code FROM orders_order_place("
    "%s::integer, %s::bigint, %s::varchar, %s::varchar, %s::varchar, %s::varchar, %s::varchar, %s::numeric, "
    "%s::numeric, %s::numeric, %s::numeric, %s::varchar, %s::bigint, %s::numeric, %s::numeric, %s::numeric, "
    "%s::inet, %s::bigint, %s::text, %s::text, %s::varchar) r"
)
# Several placements in one statement (orders_order_place_many: the same arguments as arrays).
PLACE_MANY_SQL = (
    "SELECT b.ordinal, b.outcome, (b.placed).*, b.available, b.held, b.asset_code FROM orders_order_place_many("
    "%s::integer[], %s::bigint[], %s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], %s::varchar[], "
    "%s::numeric[], %s::numeric[], %s::numeric[], %s::numeric[], %s::varchar[], %s::bigint[], %s::numeric[], "
    "%s::numeric[], %s::numeric[], %s::inet[], %s::bigint[], %s::text[], %s::text[], %s::varchar[]) b "
    "ORDER BY b.ordinal"
)
CANCEL_SQL = (
    "SELECT r.outcome, (r.cancelled).*, r.symbol FROM orders_order_cancel("
    "%s::integer, %s::bigint, %s::bigint, %s::bigint, %s::inet, %s::text, %s::varchar) r"
)
CANCEL_ALL_SQL = (
    "SELECT orders_cancel_all(%s::integer, %s::bigint, %s::varchar, %s::bigint, %s::bigint, %s::inet, %s::text, "
    "%s::varchar)"
)
BIGINT_MAX = 2**63 - 1

ACCEPTED, EXISTING, INSUFFICIENT_FUNDS = "ACCEPTED", "EXISTING", "INSUFFICIENT_FUNDS"


@dataclass(frozen=True, slots=True)
class Origin:
    """Who asks, recorded with the order and in its audit row: the client's address, the API
    key that signed the request (None for a session), the staff member acting for the user
    (None when the user acts), the user agent and the request id."""

    ip: str | None = None
    api_key_id: int | None = None
    staff_id: int | None = None
    user_agent: str = ""
    request_id: str = ""

    @classmethod
    def of(cls, audit: dict | None) -> "Origin":
        """From ``exchange.audit.services.audit_context(request)`` (or None: the system)."""
        audit = audit or {}
        api_key, staff = audit.get("actor_api_key"), audit.get("actor_staff")
        return cls.clean(ip=audit.get("ip") or None, api_key_id=getattr(api_key, "pk", api_key),
                         staff_id=getattr(staff, "pk", staff), user_agent=audit.get("user_agent") or "",
                         request_id=audit.get("request_id") or "")

    @classmethod
    def clean(cls, *, ip, api_key_id, staff_id=None, user_agent="", request_id="") -> "Origin":
        """What a client sent, made storable: an address that is not one dropped, NUL characters
        removed, texts cut to their column (docs/AUDIT.md, "From SQL")."""
        address = parse_ip(ip) if ip else None
        return cls(str(address) if address is not None else None, api_key_id, staff_id,
                   user_agent.replace("\x00", "")[:USER_AGENT_LENGTH_MAX], request_id.replace("\x00", "")[:64])

    def cancel_params(self) -> tuple:
        return (self.api_key_id, self.staff_id, self.ip, self.user_agent, self.request_id)


def reference_of(pulse: Pulse | None, *, last_price_fallback: Decimal | None = None) -> Reference:
    """The prices an order is checked against, as the market's matcher last published them
    with its heartbeat; without a heartbeat only the last trade price (``last_price_fallback``,
    read from the database by the caller)."""
    if pulse is None:
        return Reference(last_price=last_price_fallback)
    return Reference(last_price=pulse.last_price, best_bid=pulse.best_bid, best_ask=pulse.best_ask)


def require_matcher(market: Market, pulse: Pulse | None) -> None:
    """Refuse (503) rather than accept orders that no matcher would sequence now."""
    if settings.ORDERS_REQUIRE_LIVE_MATCHER and (pulse is None or not pulse.alive()):
        raise ServiceUnavailable(
            f"The matching engine for {market.symbol} is not running; retry shortly.", code="MATCHER_UNAVAILABLE"
        )


@dataclass(frozen=True, slots=True)
class Prepared:
    market: Market
    request: OrderRequest
    checked: CheckedOrder
    params: tuple

    @property
    def client_order_id(self) -> str:
        """The order's client_order_id: the request's, or the one generated for it."""
        return self.params[3]


def placement_prepare(*, user_id: int, market: Market, request: OrderRequest, reference: Reference,
                      pulse: Pulse | None, fees: FeeRates, origin: Origin,
                      client_order_id: str | None = None) -> Prepared:
    """Check ``request`` against the market's rules; the arguments of PLACE_SQL. Raises ApplicationError.

    ``client_order_id`` is the id to give the order when the request has none
    (default: a new one), so that preparing the same request twice names the
    same order (its risk reservation is keyed by it)."""
    checked = order_check(market=market, request=request, reference=reference)
    require_matcher(market, pulse)
    hold_asset = market.quote if checked.hold_asset_is_quote else market.base
    params = (
        user_id, market.id, market.symbol, request.client_order_id or client_order_id or uuid.uuid4().hex,
        checked.side, checked.type, checked.time_in_force, checked.price, checked.stop_price,
        checked.quantity, checked.quote_quantity, checked.stp_mode,
        hold_asset.id, checked.hold_amount, fees.maker, fees.taker,
        origin.ip, origin.api_key_id, f"{checked.side} {checked.type} {market.symbol}", origin.user_agent,
        origin.request_id,
    )
    return Prepared(market, request, checked, params)


def same_request(order: dict, request: OrderRequest, market: Market) -> bool:
    """Whether ``request`` asks for what ``order`` (a row) was placed with: every
    field, including the time in force (left out: GTC, as at placement, for
    a non-market order) and the self-trade prevention mode (left out: any,
    since the market's default may have changed since the first request)."""

    def same(a, b):
        return (a is None and b is None) or (a is not None and b is not None and Decimal(a) == Decimal(b))

    time_in_force = request.time_in_force
    if time_in_force is None and request.type not in MARKET_LIKE_TYPES:
        time_in_force = TimeInForce.GTC
    return (
        order["market_id"] == market.id
        and order["side"] == request.side
        and order["type"] == request.type
        and same(order["quantity"], request.quantity)
        and same(order["quote_quantity"], request.quote_quantity)
        and same(order["price"], request.price)
        and same(order["stop_price"], request.stop_price)
        and order["time_in_force"] == time_in_force
        and (request.stp_mode is None or order["stp_mode"] == request.stp_mode)
    )


def existing_outcome(order: dict, request: OrderRequest, market: Market) -> dict:
    """An order found under the request's client_order_id: the order, if the request repeats it."""
    if not same_request(order, request, market):
        raise ApplicationError(
            "CLIENT_ORDER_ID_REUSED",
            "client_order_id was already used for a different order.",
            field="client_order_id",
            status_code=409,
        )
    return order


@dataclass(frozen=True, slots=True)
class Outcome:
    order: dict  # the order's row, column names as keys
    created: bool
    available: Decimal | None = None  # the held asset's balances after the hold (created only)
    held: Decimal | None = None
    asset_code: str = ""


def placement_outcome(prepared: Prepared, row: dict) -> Outcome:
    """Interpret PLACE_SQL's row (column names as keys). Raises ApplicationError."""
    outcome = row["outcome"]
    if outcome == ACCEPTED:
        return Outcome(row, True, row["available"], row["held"], row["asset_code"])
    if outcome == EXISTING:
        return Outcome(existing_outcome(row, prepared.request, prepared.market), False)
    assert outcome == INSUFFICIENT_FUNDS, outcome
    raise ApplicationError(
        "INSUFFICIENT_FUNDS",
        f"Insufficient {row['asset_code']}: {decimal_to_str(prepared.checked.hold_amount)} needed, "
        f"{decimal_to_str(row['available'])} available.",
        extra={"asset": row["asset_code"]},
    )


def cancel_outcome(row: dict) -> dict:
    """Interpret CANCEL_SQL's row: the order (its cancel requested), or the API error."""
    outcome = row["outcome"]
    if outcome == "REQUESTED":
        return row
    if outcome == "NOT_FOUND":
        raise order_not_found()
    if outcome == "NOT_OPEN":
        raise ApplicationError(
            "ORDER_NOT_OPEN", f"The order is already {row['status']}.", status_code=409, extra={"status": row["status"]}
        )
    assert outcome == "MARKET_HALTED", outcome
    raise market_halted_for_cancels()


def order_not_found() -> ApplicationError:
    return ApplicationError("ORDER_NOT_FOUND", "No such order.", status_code=404)


def market_halted_for_cancels() -> ApplicationError:
    return ApplicationError("MARKET_HALTED", "The market is halted: cancels resume with trading.", status_code=409)
