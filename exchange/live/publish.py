"""What the matcher and the order API publish to WebSocket subscribers.

Everything here runs after the database commit and is best-effort: an error
is logged and swallowed, never raised into matching or placement. A lost
message costs subscribers a resync (market channels) or a REST read
(private channels), never correctness.

Cost per matcher batch, whatever the number of subscribers: one Lua call that
reads the members of the batch's groups (the market's three channels and
``user.{id}`` of every user the batch touched) and one Lua call that writes
the messages, one per receiving daphne process. Market payloads come from
the batch's engine events. Private payloads are the REST representations
(orders/representations.py, wallet/representations.py, no DRF): for users
with a live connection only, the rows they need (their changed orders, their
fills, their two balances) are read in one round trip per batch, never per
message.

Payloads travel pre-serialized: every ``data`` of a frame is encoded to JSON
once here (orjson), and each daphne process wraps it in the envelope once per
message (exchange/live/consumers.py), not once per recipient.

This module imports no REST view (a test checks it): the REST layer imports
it (orders.services), so the reverse would be a circle.
"""

from __future__ import annotations

import datetime
import logging
import time
from decimal import Decimal

import orjson
from django.db import connection, transaction

from exchange.core.fields import decimal_to_str
from exchange.live import protocol
from exchange.live.fanout import group_sender
from orders.representations import my_trade_representation, order_representation, ticker_representation
from wallet.representations import balance_representation

logger = logging.getLogger(__name__)

_ZERO = Decimal(0)

TICKER_EVERY_S = 0.5  # at most two ticker updates per second per market
# Engine events about one order of one user (CANCEL_REJECTED changes nothing).
ORDER_EVENT_KINDS = frozenset({"ACCEPTED", "REJECTED", "AMEND_REJECTED", "PARTIALLY_FILLED", "FILLED", "CANCELED",
                               "EXPIRED", "TRIGGERED", "AMENDED"})

# The order columns order_representation reads (and user_id, to route the message). Timestamps are read as
# microseconds since the epoch (integers): parsing timestamptz text cost more than the rest of the rows.
_ORDER_COLUMNS = ("id", "user_id", "client_order_id", "side", "type", "time_in_force", "price", "stop_price",
                  "quantity", "quote_quantity", "filled_quantity", "filled_notional", "fee_total", "status",
                  "status_reason", "stp_mode", "cancel_requested_at", "created_at", "updated_at")
_ORDER_SELECT = ", ".join(
    f"(extract(epoch FROM {name}) * 1000000)::bigint" if name in ("created_at", "updated_at")
    else "cancel_requested_at IS NOT NULL" if name == "cancel_requested_at" else name
    for name in _ORDER_COLUMNS)
# The trade columns my_trade_representation reads.
_TRADE_COLUMNS = ("sequence", "price", "quantity", "notional", "taker_side", "executed_at", "maker_order_id",
                  "taker_order_id", "maker_user_id", "taker_user_id", "maker_fee", "taker_fee")
_TRADE_SELECT = ", ".join(
    "(extract(epoch FROM executed_at) * 1000000)::bigint" if name == "executed_at" else name for name in _TRADE_COLUMNS)
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def _ms(micros: int) -> int:
    return micros // 1000


def dumps(value) -> str:
    """JSON text of a payload (orjson: amounts are already strings, never floats)."""
    return orjson.dumps(value).decode()


def ticker_data(market, *, best_bid: str | None, best_ask: str | None) -> dict:
    """GET /api/v1/ticker/{symbol}'s body plus the best bid and ask (3 queries)."""
    from orders import selectors

    data = ticker_representation(selectors.ticker(market=market))
    data["best_bid"] = best_bid
    data["best_ask"] = best_ask
    return data


def balances_data(*, user_ids, assets: dict[int, str]) -> dict[int, list[dict]]:
    """{user id: [{"asset","available","held","total"}...]} for these assets, as
    GET /api/v1/balances shows them (1 query)."""
    from wallet.selectors import balances_of

    return {user_id: [balance_representation(b.asset, b.available, b.held) for b in balances]
            for user_id, balances in balances_of(user_ids=user_ids, assets=assets).items()}


def private_rows(*, order_ids, user_ids, asset_ids, market_id: int, trade_sequences):
    """The rows the private messages of one batch need, in ONE round trip
    (three SELECTs sent together): ``(orders, balances, trades)`` where
    orders and trades are dicts keyed by column name and balances is
    ``{(user id, asset id, kind): balance}``. Timestamps are exact (integer
    microseconds: ``extract(epoch ...)`` is numeric from PostgreSQL 14 on);
    ``cancel_requested_at`` is only True or None."""
    import psycopg

    from orders.models import Order, Trade
    from wallet.models import Account, AccountKind

    connection.ensure_connection()
    statements, params = [], []
    statements.append(f"SELECT {_ORDER_SELECT} FROM {Order._meta.db_table} WHERE id = ANY(%s) ORDER BY id")
    params.append(list(order_ids))
    statements.append(f"SELECT user_id, asset_id, kind, balance FROM {Account._meta.db_table} "
                      f"WHERE user_id = ANY(%s) AND asset_id = ANY(%s) AND kind IN (%s, %s)")
    params += [list(user_ids), list(asset_ids), AccountKind.AVAILABLE.value, AccountKind.HELD.value]
    statements.append(f"SELECT {_TRADE_SELECT} FROM {Trade._meta.db_table} "
                      f"WHERE market_id = %s AND sequence = ANY(%s) ORDER BY sequence")
    params += [market_id, list(trade_sequences)]
    with psycopg.ClientCursor(connection.connection) as cursor:
        cursor.execute("; ".join(statements), params)
        orders = [dict(zip(_ORDER_COLUMNS, row)) for row in cursor.fetchall()]
        cursor.nextset()
        balances = {(user_id, asset_id, kind): balance for user_id, asset_id, kind, balance in cursor.fetchall()}
        cursor.nextset()
        trades = [dict(zip(_TRADE_COLUMNS, row)) for row in cursor.fetchall()]
    for row in orders:
        row["created_at"] = _from_micros(row["created_at"])
        row["updated_at"] = _from_micros(row["updated_at"])
        row["cancel_requested_at"] = True if row["cancel_requested_at"] else None  # only "is it set" is shown
    for row in trades:
        row["executed_at"] = _from_micros(row["executed_at"])
    return orders, balances, trades


def _from_micros(micros: int) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(microseconds=micros)


class MarketPublisher:
    """The live messages of one market's matcher (``Matcher._publish`` calls it
    after the depth key is written, so a snapshot read after joining a group
    is never older than the deltas that follow it)."""

    def __init__(self, market, units):
        self.market = market
        self.symbol = market.symbol
        self.units = units
        self._ticker_dirty = True
        self._ticker_sent_at = 0.0
        self._best: tuple | None = None
        self._sequence: int | None = None  # the last engine sequence published
        # {asset id: code} of the market's two assets, and the same ordered by code (as REST lists balances).
        self._codes = {market.base_id: market.base.code, market.quote_id: market.quote.code}
        self._ordered_codes = sorted(self._codes.items(), key=lambda item: item[1])
        self.book_group = protocol.book_group(self.symbol)
        self.trades_group = protocol.trades_group(self.symbol)
        self.ticker_group = protocol.ticker_group(self.symbol)

    # ----------------------------------------------------------- batches

    def publish(self, result, *, best_bid: str | None, best_ask: str | None) -> None:
        try:
            self._publish(result, best_bid, best_ask)
        except Exception as exc:  # noqa: BLE001 - never stop matching for a live message
            logger.warning("live publishing failed", extra={"symbol": self.symbol, "error": repr(exc)})

    def _publish(self, result, best_bid, best_ask) -> None:
        if (best_bid, best_ask) != self._best:
            self._best = (best_bid, best_ask)
            self._ticker_dirty = True
        if result is None or (not result.events and not result.order_changes):
            self.flush_ticker()
            return
        units = self.units
        events = result.events
        if events:
            self._sequence = events[-1].sequence
        trades, touched = [], {}  # touched: order id -> user id
        for event in events:
            kind = event.kind
            if kind in ORDER_EVENT_KINDS:  # makers and takers of trades get FILLED/PARTIALLY_FILLED too
                touched[event.order_id] = event.user_id
            elif kind == "TRADE":
                trades.append(event)
        for order_id in result.order_changes:  # orders canceled before they were sequenced emit no event
            if order_id not in touched and order_id in result.order_users:
                touched[order_id] = result.order_users[order_id]
        if trades:
            self._ticker_dirty = True

        sender = group_sender()
        user_ids = set(touched.values())
        groups = [self.book_group, self.trades_group, self.ticker_group]
        groups += [protocol.user_group(user_id) for user_id in sorted(user_ids)]
        members = sender.members(groups)
        messages = []
        if events and self.book_group in members:
            book_levels: dict[tuple[str, int], int] = {}
            for event in events:
                if event.kind == "BOOK_DELTA":
                    book_levels[(event.side, event.price_ticks)] = event.quantity_lots
            bids = sorted(((p, q) for (side, p), q in book_levels.items() if side == "BUY"), reverse=True)
            asks = sorted((p, q) for (side, p), q in book_levels.items() if side != "BUY")

            def levels(rows):
                return [[decimal_to_str(units.ticks_to_price(p)), decimal_to_str(units.lots_to_quantity(q))]
                        for p, q in rows]

            prev_sequence = events[0].sequence - 1
            messages.append((self.book_group, {
                "type": protocol.LAYER_BOOK, "symbol": self.symbol,
                "prev_sequence": prev_sequence, "sequence": events[-1].sequence,
                "timestamp": _ms(events[-1].timestamp),
                "data": dumps({"prev_sequence": prev_sequence, "bids": levels(bids), "asks": levels(asks)}),
            }))
        if trades and self.trades_group in members:
            messages.append((self.trades_group, {
                "type": protocol.LAYER_TRADES, "symbol": self.symbol, "sequence": trades[-1].sequence,
                "timestamp": _ms(trades[-1].timestamp),
                "data": dumps([{
                    "sequence": trade.sequence,
                    "price": decimal_to_str(units.ticks_to_price(trade.price_ticks)),
                    "quantity": decimal_to_str(units.lots_to_quantity(trade.quantity_lots)),
                    "taker_side": trade.taker_side,
                    "timestamp": _ms(trade.timestamp),
                } for trade in trades]),
            }))
        live_users = {user_id for user_id in user_ids if protocol.user_group(user_id) in members}
        if live_users:
            messages.extend(self._user_messages(result, touched, trades, live_users))
        if self.ticker_group in members:
            ticker = self._ticker_message(members)
            if ticker is not None:
                messages.append(ticker)
        if messages:
            sender.send(messages, members)

    def publish_orders(self, user_id: int, order_ids: list[int]) -> None:
        """``order_ids`` as they are now, with the market's balances, to their owner
        if connected: for a change made outside a batch (a command set aside,
        matching/worker/poison.py), which no batch's events describe."""
        try:
            sender = group_sender()
            group = protocol.user_group(user_id)
            members = sender.members([group])
            if group in members:
                touched = {order_id: user_id for order_id in order_ids}
                sender.send(self._user_messages(None, touched, [], {user_id}), members)
        except Exception as exc:  # noqa: BLE001 - never stop matching for a live message
            logger.warning("live publishing failed", extra={"symbol": self.symbol, "error": repr(exc)})

    def _user_messages(self, result, touched, trades, live_users) -> list:
        """One message per live user: their changed orders, their fills and the
        market's two balances, as REST represents them, from one round trip
        (``private_rows``), each payload serialized once."""
        market = self.market
        symbol, base_code, quote_code = self.symbol, self._codes[market.base_id], self._codes[market.quote_id]
        sequence = result.events[-1].sequence if result is not None and result.events else None
        order_ids = [order_id for order_id, user_id in touched.items() if user_id in live_users]
        sequences = [t.sequence for t in trades if t.maker_user_id in live_users or t.taker_user_id in live_users]
        order_rows, balances, trade_rows = private_rows(
            order_ids=order_ids, user_ids=live_users, asset_ids=list(self._codes), market_id=market.id,
            trade_sequences=sequences)
        orders_by_user: dict[int, list] = {user_id: [] for user_id in live_users}
        for row in order_rows:
            orders_by_user[row["user_id"]].append(dumps(order_representation(
                row, symbol=symbol, base_code=base_code, quote_code=quote_code)))
        trades_by_user: dict[int, list] = {user_id: [] for user_id in live_users}
        for row in trade_rows:
            for user_id in sorted({row["maker_user_id"], row["taker_user_id"]} & live_users):
                trades_by_user[user_id].append(dumps(my_trade_representation(
                    row, user_id=user_id, symbol=symbol, base_code=base_code, quote_code=quote_code)))
        return [
            (protocol.user_group(user_id), {
                "type": protocol.LAYER_USER, "user_id": user_id, "sequence": sequence,
                "orders": orders_by_user[user_id], "trades": trades_by_user[user_id],
                "balances": self._balances_json(balances, user_id),
            })
            for user_id in sorted(live_users)
        ]

    def _balances_json(self, balances: dict, user_id: int) -> str:
        """The market's two assets of one user, ordered by code, as GET /api/v1/balances items."""
        zero = _ZERO
        return dumps([
            balance_representation(code, balances.get((user_id, asset_id, "AVAILABLE"), zero),
                                   balances.get((user_id, asset_id, "HELD"), zero))
            for asset_id, code in self._ordered_codes
        ])

    # ------------------------------------------------------------ ticker

    def _ticker_message(self, members) -> tuple | None:
        now = time.monotonic()
        if not self._ticker_dirty or now - self._ticker_sent_at < TICKER_EVERY_S:
            return None
        self._ticker_dirty = False
        self._ticker_sent_at = now
        best_bid, best_ask = self._best or (None, None)
        data = ticker_data(self.market, best_bid=best_bid, best_ask=best_ask)
        return (self.ticker_group, {"type": protocol.LAYER_TICKER, "symbol": self.symbol, "data": dumps(data),
                                    "sequence": self._sequence, "timestamp": protocol.now_ms()})

    def flush_ticker(self) -> None:
        """Send a pending ticker change once the throttle allows (the matcher
        calls this when idle too, so the last change is never held back)."""
        if not self._ticker_dirty or time.monotonic() - self._ticker_sent_at < TICKER_EVERY_S:
            return
        try:
            sender = group_sender()
            members = sender.members([self.ticker_group])
            if not members:
                self._ticker_dirty = False
                return
            message = self._ticker_message(members)
            if message is not None:
                sender.send([message], members)
        except Exception as exc:  # noqa: BLE001
            logger.warning("live ticker failed", extra={"symbol": self.symbol, "error": repr(exc)})


# ----------------------------------------------------------------- API side


def order_accepted_on_commit(order) -> None:
    """After the placement commits: the PENDING order on ``user.orders`` and the
    held asset's balance on ``user.balances`` of its owner, if connected.
    Registered before the command is enqueued, so it precedes the matcher's
    messages about the order."""
    order_id, user_id = order.pk, order.user_id
    transaction.on_commit(lambda: order_accepted_publish(order_id, user_id))


def order_accepted_publish(order_id: int, user_id: int) -> None:
    """The message ``order_accepted_on_commit`` sends, once the placement has committed."""
    try:
        from orders.models import Order

        sender = group_sender()
        group = protocol.user_group(user_id)
        members = sender.members([group])
        if not members:
            return
        order = Order.objects.select_related("market__base", "market__quote").get(pk=order_id)
        market = order.market
        assets = {market.base_id: market.base.code, market.quote_id: market.quote.code}
        balances = balances_data(user_ids=[user_id], assets=assets)[user_id]
        data = order_representation(vars(order), symbol=market.symbol, base_code=market.base.code,
                                    quote_code=market.quote.code)
        sender.send([(group, {"type": protocol.LAYER_USER, "user_id": user_id, "sequence": None,
                              "orders": [dumps(data)], "trades": [], "balances": dumps(balances)})],
                    members)
    except Exception as exc:  # noqa: BLE001 - placement already succeeded; a live message is best-effort
        logger.warning("live order notification failed", extra={"order_id": order_id, "error": repr(exc)})
