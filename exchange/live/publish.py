"""What the matcher and the order API publish to WebSocket subscribers.

Everything here runs after the database commit and is best-effort: an error
is logged and swallowed, never raised into matching or placement. A lost
message costs subscribers a resync (market channels) or a REST read
(private channels), never correctness.

Cost per matcher batch, whatever the number of subscribers: one Lua call that
reads the members of the batch's groups (the market's three channels and
``user.{id}`` of every user the batch touched) and one Lua call that writes
the messages, one per receiving daphne process. Private payloads are the REST
representations; they are loaded only for users with a live connection
(three queries: orders, trades, balances) and never otherwise.
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

from django.db import transaction

from exchange.core.fields import decimal_to_str
from exchange.live import protocol
from exchange.live.fanout import group_sender

logger = logging.getLogger(__name__)

TICKER_EVERY_S = 0.5  # at most two ticker updates per second per market
# Engine events about one order of one user (CANCEL_REJECTED changes nothing).
ORDER_EVENT_KINDS = frozenset({"ACCEPTED", "REJECTED", "AMEND_REJECTED", "PARTIALLY_FILLED", "FILLED", "CANCELED",
                               "EXPIRED", "TRIGGERED", "AMENDED"})


def _ms(micros: int) -> int:
    return micros // 1000


def ticker_data(market, *, best_bid: str | None, best_ask: str | None) -> dict:
    """GET /api/v1/ticker/{symbol}'s body plus the best bid and ask (3 queries)."""
    from orders import selectors
    from orders.api.views import TickerOutput

    data = dict(TickerOutput(selectors.ticker(market=market)).data)
    data["best_bid"] = best_bid
    data["best_ask"] = best_ask
    return data


def balances_data(*, user_ids, assets: dict[int, str], output=None) -> dict[int, list[dict]]:
    """{user id: [{"asset","available","held","total"}...]} for these assets, as
    GET /api/v1/balances shows them (1 query)."""
    from wallet.api.views import BalanceOutput
    from wallet.selectors import balances_of

    output = output or BalanceOutput()
    return {user_id: [output.to_representation(balance) for balance in balances]
            for user_id, balances in balances_of(user_ids=user_ids, assets=assets).items()}


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
        self._rest = None
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

            messages.append((self.book_group, {
                "type": protocol.LAYER_BOOK, "symbol": self.symbol,
                "prev_sequence": events[0].sequence - 1, "sequence": events[-1].sequence,
                "timestamp": _ms(events[-1].timestamp), "bids": levels(bids), "asks": levels(asks),
            }))
        if trades and self.trades_group in members:
            messages.append((self.trades_group, {
                "type": protocol.LAYER_TRADES, "symbol": self.symbol, "sequence": trades[-1].sequence,
                "timestamp": _ms(trades[-1].timestamp),
                "trades": [{
                    "sequence": trade.sequence,
                    "price": decimal_to_str(units.ticks_to_price(trade.price_ticks)),
                    "quantity": decimal_to_str(units.lots_to_quantity(trade.quantity_lots)),
                    "taker_side": trade.taker_side,
                    "timestamp": _ms(trade.timestamp),
                } for trade in trades],
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

    def _serializers(self):
        """One instance of each REST serializer, reused: building a DRF
        serializer deep-copies its fields, which costs far more than
        rendering one object with it."""
        if self._rest is None:
            from orders.api.views import MyTradeOutput, OrderOutput
            from wallet.api.views import BalanceOutput

            viewer = SimpleNamespace(pk=None)
            self._rest = (OrderOutput(), MyTradeOutput(context={"user": viewer}), viewer, BalanceOutput())
        return self._rest

    def _user_messages(self, result, touched, trades, live_users) -> list:
        """One message per live user: their changed orders, trades and balances
        (REST representations), loaded in three queries."""
        from orders.models import Order, Trade

        order_output, trade_output, viewer, balance_output = self._serializers()
        market = self.market
        sequence = result.events[-1].sequence if result.events else None
        order_ids = [order_id for order_id, user_id in touched.items() if user_id in live_users]
        orders_by_user: dict[int, list] = {user_id: [] for user_id in live_users}
        for order in Order.objects.filter(id__in=order_ids).order_by("id"):
            order.market = market
            orders_by_user[order.user_id].append(order_output.to_representation(order))
        trades_by_user: dict[int, list] = {user_id: [] for user_id in live_users}
        sequences = [t.sequence for t in trades if t.maker_user_id in live_users or t.taker_user_id in live_users]
        if sequences:
            for trade in Trade.objects.filter(market=market, sequence__in=sequences).order_by("sequence"):
                trade.market = market
                for user_id in sorted({trade.maker_user_id, trade.taker_user_id} & live_users):
                    viewer.pk = user_id
                    trades_by_user[user_id].append(trade_output.to_representation(trade))
        balances = balances_data(
            user_ids=live_users, assets={market.base_id: market.base.code, market.quote_id: market.quote.code},
            output=balance_output)
        return [
            (protocol.user_group(user_id), {
                "type": protocol.LAYER_USER, "user_id": user_id, "sequence": sequence,
                "orders": orders_by_user[user_id], "trades": trades_by_user[user_id],
                "balances": balances[user_id],
            })
            for user_id in sorted(live_users)
        ]

    # ------------------------------------------------------------ ticker

    def _ticker_message(self, members) -> tuple | None:
        now = time.monotonic()
        if not self._ticker_dirty or now - self._ticker_sent_at < TICKER_EVERY_S:
            return None
        self._ticker_dirty = False
        self._ticker_sent_at = now
        best_bid, best_ask = self._best or (None, None)
        data = ticker_data(self.market, best_bid=best_bid, best_ask=best_ask)
        return (self.ticker_group, {"type": protocol.LAYER_TICKER, "symbol": self.symbol, "data": data,
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
        from orders.api.views import OrderOutput
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
        sender.send([(group, {"type": protocol.LAYER_USER, "user_id": user_id, "sequence": None,
                              "orders": [OrderOutput().to_representation(order)], "trades": [], "balances": balances})],
                    members)
    except Exception as exc:  # noqa: BLE001 - placement already succeeded; a live message is best-effort
        logger.warning("live order notification failed", extra={"order_id": order_id, "error": repr(exc)})
