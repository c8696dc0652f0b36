"""A small asyncio Redis client for the fast order path: pipelines on one connection.

redis-py's asyncio client spends several hundred microseconds of Python per
pipeline (connection pool, per-command encoders, parsers and observability
hooks); the order path sends two pipelines per order and has a budget of a
few hundred microseconds for everything. This client does only what that
path needs: it encodes a pipeline's commands into one buffer, writes it in
one call on a single connection shared by every request of the process
(Redis answers in order, so replies are matched to requests first in,
first out), and parses replies with hiredis. Everything else keeps using
redis-py.

Errors: a reply error comes back as a ``ReplyError`` in place of that
command's reply (the caller decides); a connection that fails or times out
fails every request waiting on it with ``ConnectionError`` and is replaced
by the next request. A server still loading its data set after a restart
(``LOADING``) cannot serve yet either: that request fails with
``ConnectionError`` too (redis-py's ``BusyLoadingError`` is one), so the
order path answers 503 as it does while Redis is down.
"""

from __future__ import annotations

import asyncio
from collections import deque
from urllib.parse import parse_qs, unquote, urlparse

import hiredis
from hiredis import pack_command

ReplyError = hiredis.ReplyError
TIMEOUT_S = 5.0


def encode(commands) -> bytes:
    """RESP arrays of bulk strings for ``commands`` (tuples of str, bytes or int), packed by hiredis."""
    return b"".join([pack_command(command) for command in commands])


class _Protocol(asyncio.Protocol):
    def __init__(self):
        self.reader = hiredis.Reader(replyError=ReplyError)
        self.waiting: deque[tuple[asyncio.Future, int, list]] = deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self._out: list[bytes] = []

    def connection_made(self, transport):
        self.transport = transport

    def send(self, future: asyncio.Future, count: int, data: bytes) -> None:
        """Queue ``count`` commands; everything queued in one turn of the event loop goes out
        in one write (the requests of a busy worker share a system call)."""
        self.waiting.append((future, count, []))
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(data)

    def _flush(self) -> None:
        data, self._out = b"".join(self._out), []
        if self.lost is None and data:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while self.waiting:
            future, count, replies = self.waiting[0]
            while len(replies) < count:
                reply = self.reader.gets()
                if reply is False:
                    return
                replies.append(reply)
            self.waiting.popleft()
            if not future.done():
                future.set_result(replies)

    def connection_lost(self, exc) -> None:
        self.lost = ConnectionError(f"Redis connection lost: {exc or 'closed'}")
        while self.waiting:
            future, _, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(self.lost)


class PipelineClient:
    """``await client.execute([("GET", "k"), ("SET", "k", 1)])`` -> the replies, in order."""

    def __init__(self, url: str):
        parsed = urlparse(url)
        query = parse_qs(parsed.query)
        self.unix_path = parsed.path if parsed.scheme == "unix" else None
        self.host, self.port = parsed.hostname or "127.0.0.1", parsed.port or 6379
        self.db = int(query.get("db", ["0"])[-1]) if parsed.scheme == "unix" else int(parsed.path.lstrip("/") or 0)
        self.password = unquote(parsed.password) if parsed.password else None
        self.username = unquote(parsed.username) if parsed.username else None
        self.tls = parsed.scheme == "rediss"
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future | None = None

    async def _connection(self) -> _Protocol:
        protocol = self._protocol
        if protocol is not None and protocol.lost is None:
            return protocol
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _connect(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(TIMEOUT_S):
            if self.unix_path:
                _, protocol = await loop.create_unix_connection(_Protocol, self.unix_path)
            else:
                _, protocol = await loop.create_connection(_Protocol, self.host, self.port, ssl=self.tls or None)
        setup = []
        if self.password:
            setup.append(("AUTH", self.username, self.password) if self.username else ("AUTH", self.password))
        if self.db:
            setup.append(("SELECT", self.db))
        if setup:
            for reply in await self._send(protocol, setup):
                if isinstance(reply, ReplyError):
                    protocol.transport.close()
                    raise ConnectionError(f"Redis refused the connection set-up: {reply}")
        self._protocol = protocol
        return protocol

    @staticmethod
    async def _send(protocol: _Protocol, commands) -> list:
        future = asyncio.get_running_loop().create_future()
        protocol.send(future, len(commands), encode(commands))
        async with asyncio.timeout(TIMEOUT_S):
            return await future

    async def execute(self, commands) -> list:
        """Send ``commands`` as one pipeline; their replies (a ``ReplyError`` for a refused one)."""
        protocol = await self._connection()
        try:
            replies = await self._send(protocol, commands)
        except TimeoutError:
            # Replies are matched by position: after a timeout the connection cannot be trusted.
            protocol.transport.close()
            raise ConnectionError("Redis did not answer in time") from None
        for reply in replies:
            if isinstance(reply, ReplyError) and str(reply).startswith("LOADING"):
                raise ConnectionError(f"Redis cannot serve yet: {reply}")
        return replies

    async def close(self) -> None:
        if self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.close()
        self._protocol = None
