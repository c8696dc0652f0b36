"""The JSON shapes of orders, trades and the ticker, built from plain values without DRF.

The one place these shapes are rendered: the REST serializers
(``orders.api.views.OrderOutput``, ``TradeOutput``, ``MyTradeOutput``,
``TickerOutput``) declare them for the OpenAPI schema and render through the
functions here, and so do the hot paths (the fast order-entry handler, the
live publisher), at a fraction of a serializer's cost. Tests prove that the
serializers' declared fields give the same output as these functions for the
same rows. Balances: ``wallet.representations``.

Nothing here imports the REST layer: the live layer (exchange/live) uses this
module without loading any view.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from decimal import Decimal

from exchange.core.fields import decimal_to_str

_UTC = datetime.timezone.utc


class attributes(Mapping):  # noqa: N801 - used like a function: attributes(order)
    """An object's attributes as the read-only mapping the functions here take
    (``order_representation(attributes(order), ...)``): unlike ``vars()``,
    deferred model fields are loaded on access."""

    __slots__ = ("_obj",)

    def __init__(self, obj):
        self._obj = obj

    def __getitem__(self, name: str):
        try:
            return getattr(self._obj, name)
        except AttributeError:
            raise KeyError(name) from None

    def __iter__(self):  # pragma: no cover - the functions here only index
        return iter(())

    def __len__(self) -> int:  # pragma: no cover
        return 0


def datetime_representation(value: datetime.datetime | None) -> str | None:
    """As DRF's DateTimeField renders it: ISO 8601 in UTC, with "Z"."""
    if value is None:
        return None
    text = value.astimezone(_UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def order_representation(row: Mapping, *, symbol: str, base_code: str, quote_code: str) -> dict:
    """An order as GET /api/v1/orders/{id} shows it, from its row (column names as keys:
    a database row as a dict, or ``vars(order)`` of an ``Order``)."""
    filled_quantity: Decimal = row["filled_quantity"]
    side = row["side"]
    return {
        "id": row["id"],
        "client_order_id": row["client_order_id"],
        "market": symbol,
        "side": side,
        "type": row["type"],
        "time_in_force": row["time_in_force"],
        "price": decimal_to_str(row["price"]),
        "stop_price": decimal_to_str(row["stop_price"]),
        "quantity": decimal_to_str(row["quantity"]),
        "quote_quantity": decimal_to_str(row["quote_quantity"]),
        "filled_quantity": decimal_to_str(filled_quantity),
        "filled_notional": decimal_to_str(row["filled_notional"]),
        "average_price": decimal_to_str(row["filled_notional"] / filled_quantity) if filled_quantity else None,
        "fee_total": decimal_to_str(row["fee_total"]),
        "fee_asset": base_code if side == "BUY" else quote_code,
        "status": row["status"],
        "status_reason": row["status_reason"],
        "stp_mode": row["stp_mode"],
        "cancel_requested": row["cancel_requested_at"] is not None,
        "created_at": datetime_representation(row["created_at"]),
        "updated_at": datetime_representation(row["updated_at"]),
    }


def trade_representation(row: Mapping, *, symbol: str) -> dict:
    """A trade as an item of GET /api/v1/trades/{symbol} shows it, from its row
    (``sequence``, ``price``, ``quantity``, ``notional``, ``taker_side``, ``executed_at``)."""
    return {
        "id": row["sequence"],
        "market": symbol,
        "price": decimal_to_str(row["price"]),
        "quantity": decimal_to_str(row["quantity"]),
        "quote_quantity": decimal_to_str(row["notional"]),
        "taker_side": row["taker_side"],
        "executed_at": datetime_representation(row["executed_at"]),
    }


def my_trade_representation(row: Mapping, *, user_id: int, symbol: str, base_code: str, quote_code: str) -> dict:
    """A fill as an item of GET /api/v1/trades/my shows it to ``user_id``: the
    trade plus that user's order, side, role and fee. A self-trade (the user
    on both sides) is shown once, as the taker, as REST shows it."""
    taker = row["taker_user_id"] == user_id
    taker_side = row["taker_side"]
    side = taker_side if taker else ("SELL" if taker_side == "BUY" else "BUY")
    data = trade_representation(row, symbol=symbol)
    data["order_id"] = row["taker_order_id"] if taker else row["maker_order_id"]
    data["side"] = side
    data["role"] = "TAKER" if taker else "MAKER"
    data["fee"] = decimal_to_str(row["taker_fee"] if taker else row["maker_fee"])
    data["fee_asset"] = base_code if side == "BUY" else quote_code
    return data


def ticker_representation(ticker: Mapping) -> dict:
    """GET /api/v1/ticker/{symbol}'s body from ``orders.selectors.ticker()``."""
    return {
        "symbol": ticker["symbol"],
        "open": decimal_to_str(ticker["open"]),
        "high": decimal_to_str(ticker["high"]),
        "low": decimal_to_str(ticker["low"]),
        "last": decimal_to_str(ticker["last"]),
        "volume": decimal_to_str(ticker["volume"]),
        "quote_volume": decimal_to_str(ticker["quote_volume"]),
        "trade_count": int(ticker["trade_count"]),
        "change": decimal_to_str(ticker["change"]),
        "change_percent": decimal_to_str(ticker["change_percent"]),
        "window_start": datetime_representation(ticker["window_start"]),
        "window_end": datetime_representation(ticker["window_end"]),
    }
