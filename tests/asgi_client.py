"""An in-process HTTP client of the ASGI application (``exchange.asgi.application``).

Requests go through exactly what a web worker runs: the fast order path for
the requests it takes, Django's ASGI handler (middleware, DRF) for the rest.
The application runs on one event loop in a background thread, kept for the
client's life, as in a worker (the fast path's connection pools belong to
their event loop).
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import threading
from dataclasses import dataclass
from urllib.parse import urlencode

from exchange.apikeys.signing import signed_headers


@dataclass
class AsgiResponse:
    status_code: int
    headers: dict[str, str]
    content: bytes

    def json(self):
        return jsonlib.loads(self.content)

    def __getitem__(self, name: str) -> str:
        return self.headers[name.lower()]


class AsgiClient:
    def __init__(self, remote_addr: str = "127.0.0.1"):
        from exchange.asgi import application

        self.application = application
        self.remote_addr = remote_addr
        try:
            import uvloop  # as in a web worker

            self.loop = uvloop.new_event_loop()
        except ImportError:
            self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        from exchange.core import aio

        asyncio.run_coroutine_threadsafe(aio.close(), self.loop).result(timeout=10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def request(self, method: str, path: str, *, query: str = "", body: bytes = b"",
                headers: dict[str, str] | None = None, remote_addr: str | None = None) -> AsgiResponse:
        future = asyncio.run_coroutine_threadsafe(
            self._request(method, path, query, body, headers or {}, remote_addr or self.remote_addr), self.loop)
        return future.result(timeout=60)

    async def _request(self, method, path, query, body, headers, remote_addr) -> AsgiResponse:
        raw_headers = [(b"host", b"testserver")]
        if body:
            raw_headers.append((b"content-length", str(len(body)).encode()))
        raw_headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": query.encode(), "root_path": "",
            "headers": raw_headers, "client": (remote_addr, 40000), "server": ("testserver", 80),
        }
        sent = False

        async def receive():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects first

        messages = []

        async def send(message):
            messages.append(message)

        await self.application(scope, receive, send)
        start = next(m for m in messages if m["type"] == "http.response.start")
        content = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.response.body")
        return AsgiResponse(start["status"], {k.decode().lower(): v.decode() for k, v in start["headers"]}, content)


class AsgiSignedClient:
    """Signs every request with an API key, as bots do, and sends it through ``AsgiClient``."""

    def __init__(self, client: AsgiClient, key_id: str, secret: str):
        self.client, self.key_id, self.secret = client, key_id, secret

    def request(self, method: str, path: str, *, query=None, json=None, body: bytes | None = None,
                headers: dict | None = None, sign: dict | None = None, content_type: str = "application/json",
                remote_addr: str | None = None) -> AsgiResponse:
        if body is None:
            body = jsonlib.dumps(json).encode() if json is not None else b""
        query_string = query if isinstance(query, str) else urlencode(query or {}, doseq=True)
        signed = signed_headers(self.key_id, self.secret, method, path, query_string or None, body, **(sign or {}))
        all_headers = {"Content-Type": content_type, **signed, **(headers or {})}
        return self.client.request(method, path, query=query_string, body=body, headers=all_headers,
                                   remote_addr=remote_addr)

    def post(self, path: str, json=None, **kwargs):
        return self.request("POST", path, json=json, **kwargs)

    def delete(self, path: str, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)
