"""The live-updates protocol: channel names, the groups behind them, the
envelope of every server message, and the limits (docs/LIVE.md)."""

from __future__ import annotations

import time

# Public channels are "<kind>.<SYMBOL>"; private ones carry no user id: the
# connection's user decides whose events they are.
MARKET_KINDS = ("orderbook", "trades", "ticker")
USER_CHANNELS = ("user.orders", "user.trades", "user.balances", "user.account")

# Stable error codes (data.code of a type "error" message).
BAD_MESSAGE = "BAD_MESSAGE"
UNKNOWN_CHANNEL = "UNKNOWN_CHANNEL"
AUTH_REQUIRED = "AUTH_REQUIRED"
AUTH_FAILED = "AUTH_FAILED"
RATE_LIMITED = "RATE_LIMITED"
TOO_MANY_SUBSCRIPTIONS = "TOO_MANY_SUBSCRIPTIONS"

# Limits per connection.
MAX_SUBSCRIPTIONS = 50
MAX_MESSAGE_BYTES = 4096
RATE_PER_S = 20.0  # client messages per second, sustained
RATE_BURST = 40  # ... and in a burst
RATE_STRIKES_BEFORE_CLOSE = 100  # refused messages before the server closes the connection
SNAPSHOT_LEVELS = 100  # levels per side of an orderbook snapshot (the matcher's depth key holds as many)

# The canonical request an AUTH message signs: the REST scheme of
# exchange/apikeys/signing.py for "GET /ws/" with no query and no body.
AUTH_METHOD = "GET"
AUTH_PATH = "/ws/"

# Message types on the channel layer (consumer handler names with "_").
LAYER_BOOK = "live.book"
LAYER_TRADES = "live.trades"
LAYER_TICKER = "live.ticker"
LAYER_USER = "live.user"
LAYER_ACCOUNT = "live.account"  # the user's trading state (risk/live.py)


def book_group(symbol: str) -> str:
    return f"orderbook.{symbol}"


def trades_group(symbol: str) -> str:
    return f"trades.{symbol}"


def ticker_group(symbol: str) -> str:
    return f"ticker.{symbol}"


def user_group(user_id: int) -> str:
    return f"user.{int(user_id)}"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def envelope(type_: str, channel: str | None, sequence: int | None, data, *, timestamp: int | None = None,
             request_id=None) -> dict:
    """Every server message: {type, channel, sequence, timestamp, data} (+ the
    request's ``id`` when the client gave one)."""
    message = {"type": type_, "channel": channel, "sequence": sequence,
               "timestamp": now_ms() if timestamp is None else timestamp, "data": data}
    if request_id is not None:
        message["id"] = request_id
    return message


def error(code: str, message: str, *, request_id=None, channel: str | None = None) -> dict:
    return envelope("error", channel, None, {"code": code, "message": message}, request_id=request_id)
