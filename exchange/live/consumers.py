"""The WebSocket endpoint ``/ws/``: subscriptions to market and private channels.

One consumer per connection. It joins one channel-layer group per
subscribed market channel (``orderbook.X``, ``trades.X``, ``ticker.X``) and,
for the private channels, the group ``user.{id}`` of the connection's user
(session cookie at connect, or a signed ``auth`` message). The matcher and
the order API send to those groups (exchange/live/publish.py).

Order book contiguity: the consumer remembers, per market, the sequence of
the last snapshot or update it delivered. An update is delivered iff its
``prev_sequence`` equals it; an older one is dropped (the snapshot already
has it); a newer one means a message was lost (the channel layer drops
messages for a receiver that falls behind), and the consumer sends a fresh
snapshot instead. The protocol is in docs/LIVE.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref

import redis.asyncio as aioredis
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from exchange.live import control, protocol
from matching import stream
from risk.live import account_state

logger = logging.getLogger(__name__)

_clients: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _app_redis() -> aioredis.Redis:
    """The application Redis (depth snapshots), one client per event loop."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = aioredis.Redis.from_url(settings.REDIS_APP_URL, socket_timeout=5, socket_connect_timeout=2)
        _clients[loop] = client
    return client


class _SignedAuthRequest:
    """The AUTH message seen as the signed REST request ``GET /ws/`` it signs,
    so that ApiKeyAuthentication checks it exactly as it checks REST calls
    (timestamp window, signature, replay, revoked/expired key, IP allowlist)."""

    method = protocol.AUTH_METHOD
    path = protocol.AUTH_PATH
    body = b""

    def __init__(self, message: dict, scope: dict):
        headers = {name.decode("latin1").lower(): value.decode("latin1") for name, value in scope.get("headers", [])}
        self.META = {
            "HTTP_X_API_KEY": message["api_key"],
            "HTTP_X_TIMESTAMP": str(message["timestamp"]),
            "HTTP_X_RECV_WINDOW": str(message.get("recvWindow", 5000)),
            "HTTP_X_SIGNATURE": message["signature"],
            "QUERY_STRING": "",
            "REMOTE_ADDR": (scope.get("client") or ("", 0))[0] or "",
        }
        if "x-forwarded-for" in headers:
            self.META["HTTP_X_FORWARDED_FOR"] = headers["x-forwarded-for"]


def _authenticate(message: dict, scope: dict):
    """(user, api key id, None) or (None, None, (reason code, message))."""
    from rest_framework.exceptions import APIException

    from exchange.apikeys.authentication import ApiKeyAuthentication

    try:
        user, api_key = ApiKeyAuthentication().authenticate(_SignedAuthRequest(message, scope))
    except APIException as exc:
        codes = exc.get_codes()
        return None, None, (codes if isinstance(codes, str) else "AUTH_FAILED", str(exc.detail))
    return user, api_key.pk, None


def _market_symbol(symbol: str) -> str | None:
    from exchange.models import Market

    return Market.objects.filter(symbol__iexact=symbol).values_list("symbol", flat=True).first()


def _snapshot_from_database(symbol: str) -> dict:
    from exchange.models import Market
    from orders import selectors

    return selectors.orderbook(market=Market.objects.get(symbol=symbol), depth=protocol.SNAPSHOT_LEVELS)


def _ticker(symbol: str, best_bid, best_ask) -> dict:
    from exchange.live.publish import ticker_data
    from exchange.models import Market

    return ticker_data(Market.objects.get(symbol=symbol), best_bid=best_bid, best_ask=best_ask)


def _market_frame(event: dict, channel: str) -> str:
    """The client frame of a market message, built once per message per process:
    channels-redis hands the same message dict to every connection of the
    process it was addressed to, so the first connection caches the frame on it
    and the others send the same text."""
    frame = event.get("_frame")
    if frame is None:
        # The envelope of protocol.envelope(), with the payload JSON as the publisher encoded it.
        frame = event["_frame"] = (
            f'{{"type":"update","channel":{json.dumps(channel)},"sequence":{_json_int(event["sequence"])},'
            f'"timestamp":{int(event["timestamp"])},"data":{_json(_market_data(event))}}}')
    return frame


def _market_data(event: dict):
    """The payload: JSON text from this version's publisher; a message of the
    previous version (a matcher not yet restarted during a rolling deploy)
    carried the values themselves, book levels and trades at the top level."""
    if "data" in event:
        return event["data"]
    if event["type"] == protocol.LAYER_BOOK:
        return {"prev_sequence": event["prev_sequence"], "bids": event["bids"], "asks": event["asks"]}
    return event["trades"]


def _json(value) -> str:
    """JSON text as is; a value (previous version's message) encoded here."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _private_frame(channel: str, sequence: int, timestamp: int, data: str) -> str:
    """A private frame: the envelope with this connection's counter around a payload encoded once."""
    return f'{{"type":"update","channel":"{channel}","sequence":{sequence},"timestamp":{timestamp},"data":{_json(data)}}}'


def _json_int(value) -> str:
    return "null" if value is None else str(int(value))


class LiveConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        user = self.scope.get("user")
        self.user = user if user is not None and user.is_authenticated else None
        self.subscriptions: set[str] = set()
        self.groups: set[str] = set()
        self.book_sequence: dict[str, int] = {}  # symbol -> sequence of the last snapshot/update delivered
        self.private_sequence: dict[str, int] = {}  # per-connection counters of the user.* channels
        self.symbols: dict[str, str | None] = {}
        self.tokens = float(protocol.RATE_BURST)
        self.tokens_at = time.monotonic()
        self.strikes = 0
        # Which credentials this connection lives on: revoking them closes it (exchange/live/control.py).
        session = self.scope.get("session")
        self.session_key = session.session_key if self.user is not None and session is not None else None
        self.api_key_id = None
        self.control_group = None
        await self.accept()
        if self.user is not None:
            await self._join_control_group()

    async def _join_control_group(self):
        if self.control_group is None:
            self.control_group = control.control_group(self.user.pk)
            await self.channel_layer.group_add(self.control_group, self.channel_name)

    async def disconnect(self, code):
        for group in list(getattr(self, "groups", ())):
            await self.channel_layer.group_discard(group, self.channel_name)
        self.groups = set()
        if getattr(self, "control_group", None) is not None:
            await self.channel_layer.group_discard(self.control_group, self.channel_name)
            self.control_group = None

    async def dispatch(self, message):
        """As channels' dispatch, without its thread hop for the live layer's
        own messages: channels runs ``close_old_connections`` through
        ``sync_to_async`` (one trip to the single sync thread) before every
        handler, i.e. once per message per connection; with subscribers that
        hop, not the handlers, was what saturated the web process. The
        ``live.*`` handlers use no database connection themselves (the few
        that query go through ``database_sync_to_async``, which closes old
        connections on its own), so they run directly; everything else
        (websocket.connect/receive/disconnect) keeps channels' path."""
        kind = message.get("type")
        if isinstance(kind, str) and kind.startswith("live.") and "_" not in kind:
            handler = getattr(self, kind.replace(".", "_"), None)
            if handler is not None:
                await handler(message)
                return
        await super().dispatch(message)

    async def send_json(self, message: dict) -> None:
        await self.send(text_data=json.dumps(message, separators=(",", ":")))

    # ----------------------------------------------------------- client -> server

    def _allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(float(protocol.RATE_BURST), self.tokens + (now - self.tokens_at) * protocol.RATE_PER_S)
        self.tokens_at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    async def receive(self, text_data=None, bytes_data=None):
        if not self._allow():
            self.strikes += 1
            if self.strikes >= protocol.RATE_STRIKES_BEFORE_CLOSE:
                await self.close(code=1008)
                return
            await self.send_json(protocol.error(
                protocol.RATE_LIMITED, f"At most {protocol.RATE_PER_S:g} messages per second."))
            return
        if text_data is None:
            await self.send_json(protocol.error(protocol.BAD_MESSAGE, "Send JSON text frames."))
            return
        if len(text_data.encode()) > protocol.MAX_MESSAGE_BYTES:
            await self.send_json(protocol.error(
                protocol.BAD_MESSAGE, f"A message may be at most {protocol.MAX_MESSAGE_BYTES} bytes."))
            return
        try:
            message = json.loads(text_data)
        except ValueError:
            await self.send_json(protocol.error(protocol.BAD_MESSAGE, "The message is not valid JSON."))
            return
        if not isinstance(message, dict):
            await self.send_json(protocol.error(protocol.BAD_MESSAGE, "The message must be a JSON object."))
            return
        request_id = message.get("id")
        if request_id is not None and not (
                (isinstance(request_id, int) and not isinstance(request_id, bool))
                or (isinstance(request_id, str) and len(request_id) <= 64)):
            await self.send_json(protocol.error(protocol.BAD_MESSAGE, "id must be an integer or a string of at most "
                                                                      "64 characters."))
            return
        handler = {
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "resync": self._resync,
            "ping": self._ping,
            "auth": self._auth,
        }.get(message.get("op"))
        if handler is None:
            await self.send_json(protocol.error(
                protocol.BAD_MESSAGE, "op must be one of subscribe, unsubscribe, resync, ping, auth.",
                request_id=request_id))
            return
        await handler(message, request_id)

    async def _ping(self, message, request_id):
        await self.send_json(protocol.envelope("pong", None, None, {}, request_id=request_id))

    async def _channel_list(self, message, request_id) -> list[str] | None:
        channels = message.get("channels")
        if (not isinstance(channels, list) or not channels or len(channels) > protocol.MAX_SUBSCRIPTIONS
                or not all(isinstance(name, str) for name in channels)):
            await self.send_json(protocol.error(
                protocol.BAD_MESSAGE, f"channels must be a list of 1 to {protocol.MAX_SUBSCRIPTIONS} channel names.",
                request_id=request_id))
            return None
        return channels

    async def _canonical(self, name: str, request_id) -> str | None:
        """The channel's canonical name, or None after sending the error."""
        if name in protocol.USER_CHANNELS:
            if self.user is None:
                await self.send_json(protocol.error(
                    protocol.AUTH_REQUIRED, f"{name} needs an authenticated connection (session or auth message).",
                    request_id=request_id, channel=name))
                return None
            return name
        kind, _, symbol = name.partition(".")
        if kind in protocol.MARKET_KINDS and 0 < len(symbol) <= 40 and "\x00" not in symbol:
            if symbol not in self.symbols:
                self.symbols[symbol] = await database_sync_to_async(_market_symbol)(symbol)
            if self.symbols[symbol] is not None:
                return f"{kind}.{self.symbols[symbol]}"
        await self.send_json(protocol.error(
            protocol.UNKNOWN_CHANNEL, f"There is no channel {name[:60]!r}.", request_id=request_id, channel=name[:60]))
        return None

    def _group_of(self, channel: str) -> str:
        if channel.startswith("user."):
            return protocol.user_group(self.user.pk)
        return channel  # market channels are their own groups

    async def _subscribe(self, message, request_id):
        names = await self._channel_list(message, request_id)
        if names is None:
            return
        channels = []
        for name in names:
            channel = await self._canonical(name, request_id)
            if channel is None:
                return  # nothing subscribed: a request is all or nothing
            if channel not in channels:
                channels.append(channel)
        new = [channel for channel in channels if channel not in self.subscriptions]
        if len(self.subscriptions) + len(new) > protocol.MAX_SUBSCRIPTIONS:
            await self.send_json(protocol.error(
                protocol.TOO_MANY_SUBSCRIPTIONS, f"At most {protocol.MAX_SUBSCRIPTIONS} subscriptions per connection.",
                request_id=request_id))
            return
        for channel in new:
            group = self._group_of(channel)
            if group not in self.groups:
                # Join before reading any snapshot: see the module docstring.
                await self.channel_layer.group_add(group, self.channel_name)
                self.groups.add(group)
            self.subscriptions.add(channel)
        await self.send_json(protocol.envelope("subscribed", None, None, {"channels": channels},
                                               request_id=request_id))
        for channel in new:
            kind, _, symbol = channel.partition(".")
            if kind == "orderbook":
                await self._snapshot(symbol)
            elif kind == "ticker":
                await self._ticker_now(symbol)
            elif channel == "user.account":
                await self.live_account({"user_id": self.user.pk,
                                         "data": await database_sync_to_async(account_state)(self.user.pk)})

    async def _unsubscribe(self, message, request_id):
        names = await self._channel_list(message, request_id)
        if names is None:
            return
        removed = []
        for name in names:
            kind, _, symbol = name.partition(".")
            channel = name
            if kind in protocol.MARKET_KINDS:
                channel = f"{kind}.{self.symbols.get(symbol) or symbol}"
            if channel in self.subscriptions:
                self.subscriptions.discard(channel)
                removed.append(channel)
                if kind == "orderbook":
                    self.book_sequence.pop(channel.partition(".")[2], None)
        still_needed = {self._group_of(channel) for channel in self.subscriptions}
        for group in list(self.groups - still_needed):
            await self.channel_layer.group_discard(group, self.channel_name)
            self.groups.discard(group)
        await self.send_json(protocol.envelope("unsubscribed", None, None, {"channels": removed},
                                               request_id=request_id))

    async def _resync(self, message, request_id):
        name = message.get("channel")
        kind, _, symbol = name.partition(".") if isinstance(name, str) else ("", "", "")
        symbol = self.symbols.get(symbol) or symbol
        if kind != "orderbook" or f"orderbook.{symbol}" not in self.subscriptions:
            await self.send_json(protocol.error(
                protocol.BAD_MESSAGE, "resync needs the name of an orderbook channel this connection subscribes to.",
                request_id=request_id))
            return
        await self._snapshot(symbol, request_id=request_id)

    async def _auth(self, message, request_id):
        fields_ok = (
            isinstance(message.get("api_key"), str) and isinstance(message.get("signature"), str)
            and isinstance(message.get("timestamp"), (int, str)) and not isinstance(message.get("timestamp"), bool)
            and isinstance(message.get("recvWindow", 5000), (int, str))
        )
        if not fields_ok:
            await self.send_json(protocol.error(
                protocol.BAD_MESSAGE, "auth needs api_key, timestamp, signature (and optionally recvWindow).",
                request_id=request_id))
            return
        user, api_key_id, failure = await database_sync_to_async(_authenticate)(message, self.scope)
        if user is None:
            reason, text = failure
            error = protocol.error(protocol.AUTH_FAILED, text, request_id=request_id)
            error["data"]["reason"] = reason
            await self.send_json(error)
            return
        if self.user is not None and self.user.pk != user.pk:
            await self.send_json(protocol.error(
                protocol.AUTH_FAILED, "This connection is already authenticated as another user.",
                request_id=request_id))
            return
        self.user = user
        self.api_key_id = api_key_id
        await self._join_control_group()
        await self.send_json(protocol.envelope("authenticated", None, None, {"user_id": user.pk},
                                               request_id=request_id))

    # ----------------------------------------------------------- snapshots

    async def _snapshot(self, symbol: str, request_id=None) -> None:
        """Send the order book as the matcher last published it (the depth key
        written in the same step as the deltas), or from the database if the
        matcher has published nothing yet."""
        try:
            raw = await _app_redis().get(stream.depth_key(symbol))
        except Exception:  # noqa: BLE001 - Redis down: the database still knows the book
            raw = None
        book = json.loads(raw) if raw else await database_sync_to_async(_snapshot_from_database)(symbol)
        self.book_sequence[symbol] = book["sequence"]
        await self.send_json(protocol.envelope(
            "snapshot", f"orderbook.{symbol}", book["sequence"],
            {"bids": book["bids"][:protocol.SNAPSHOT_LEVELS], "asks": book["asks"][:protocol.SNAPSHOT_LEVELS]},
            request_id=request_id))

    async def _ticker_now(self, symbol: str) -> None:
        try:
            raw = await _app_redis().get(stream.depth_key(symbol))
        except Exception:  # noqa: BLE001
            raw = None
        book = json.loads(raw) if raw else {"sequence": None, "bids": [], "asks": []}
        data = await database_sync_to_async(_ticker)(
            symbol, book["bids"][0][0] if book["bids"] else None, book["asks"][0][0] if book["asks"] else None)
        await self.send_json(protocol.envelope("update", f"ticker.{symbol}", book["sequence"], data))

    # ----------------------------------------------------------- server -> client (channel layer)

    async def live_book(self, event):
        symbol = event["symbol"]
        last = self.book_sequence.get(symbol)
        if last is None or f"orderbook.{symbol}" not in self.subscriptions or event["sequence"] <= last:
            return  # not subscribed, or already in the snapshot delivered
        if event["prev_sequence"] != last:
            # A message was lost on the way (receiver over capacity, publisher
            # error): a fresh snapshot replaces the missing updates.
            await self._snapshot(symbol)
            last = self.book_sequence[symbol]
            if event["sequence"] <= last or event["prev_sequence"] != last:
                return
        self.book_sequence[symbol] = event["sequence"]
        await self.send(text_data=_market_frame(event, f"orderbook.{symbol}"))

    async def live_trades(self, event):
        channel = f"trades.{event['symbol']}"
        if channel in self.subscriptions:
            await self.send(text_data=_market_frame(event, channel))

    async def live_ticker(self, event):
        channel = f"ticker.{event['symbol']}"
        if channel in self.subscriptions:
            await self.send(text_data=_market_frame(event, channel))

    async def live_close(self, event):
        """The credentials this connection authenticated with were revoked, signed out or deactivated."""
        if control.closes(event, user_id=self.user and self.user.pk, session_key=self.session_key,
                          api_key_id=self.api_key_id):
            await self.close(code=control.CLOSE_CODE, reason=event.get("reason", "")[:120])

    async def live_account(self, event):
        """The user's trading state (ACTIVE, CANCEL_ONLY, FROZEN): on subscribe, then on every change."""
        if self.user is not None and event["user_id"] == self.user.pk and "user.account" in self.subscriptions:
            await self.send_json(protocol.envelope("update", "user.account", self._next_private("user.account"),
                                                   event["data"]))

    def _next_private(self, channel: str) -> int:
        self.private_sequence[channel] = self.private_sequence.get(channel, 0) + 1
        return self.private_sequence[channel]

    async def live_user(self, event):
        # The group is the user's own; checking again costs nothing.
        if self.user is None or event["user_id"] != self.user.pk:
            return
        # The payloads arrive as JSON text (exchange/live/publish.py); only the
        # envelope, whose counter is this connection's, is written here.
        timestamp = event.get("_received_ms")
        if timestamp is None:
            timestamp = event["_received_ms"] = protocol.now_ms()  # the same for every connection of the process
        if "user.orders" in self.subscriptions:
            for order in event["orders"]:
                await self.send(text_data=_private_frame("user.orders", self._next_private("user.orders"), timestamp,
                                                         order))
        if "user.trades" in self.subscriptions:
            for trade in event["trades"]:
                await self.send(text_data=_private_frame("user.trades", self._next_private("user.trades"), timestamp,
                                                         trade))
        if "user.balances" in self.subscriptions and event["balances"] not in (None, "[]", []):
            await self.send(text_data=_private_frame("user.balances", self._next_private("user.balances"), timestamp,
                                                     event["balances"]))
