"""The request signing scheme of API keys, for clients and the server alike.

A signed request carries four headers::

    X-API-KEY       the key's public id
    X-TIMESTAMP     milliseconds since the Unix epoch when the client signed
    X-RECV-WINDOW   milliseconds the request stays valid after X-TIMESTAMP
                    (optional: 5000 when absent; at most 60000)
    X-SIGNATURE     lower-case hex HMAC-SHA256, keyed with the secret (its
                    UTF-8 bytes), of the canonical request below

The canonical request is six lines joined by "\\n" (no trailing newline)::

    timestamp       the X-TIMESTAMP header exactly as sent
    recv_window     the X-RECV-WINDOW header exactly as sent, or "5000"
    method          upper case: GET, POST, DELETE...
    path            the URL path without the query, e.g. /api/v1/auth/me
    query           the canonical query string (see ``canonical_query``)
    body_sha256     lower-case hex SHA-256 of the raw body bytes; an empty
                    body hashes b"" (e3b0c442...b855)

The server rebuilds the same string with these same functions, so a client
that uses this module cannot disagree with it. This module imports only the
standard library: bots and benchmarks may copy it as is.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote

HEADER_API_KEY = "X-API-KEY"
HEADER_TIMESTAMP = "X-TIMESTAMP"
HEADER_RECV_WINDOW = "X-RECV-WINDOW"
HEADER_SIGNATURE = "X-SIGNATURE"

RECV_WINDOW_MS_DEFAULT = 5000
RECV_WINDOW_MS_MAX = 60000

QueryInput = Mapping[str, object] | Iterable[tuple[str, object]] | str | None


def _encode(text: str) -> str:
    """RFC 3986 percent-encoding of UTF-8: only A-Z a-z 0-9 - . _ ~ stay as they are."""
    return quote(text, safe="")


def _query_pairs(query: QueryInput) -> list[tuple[str, str]]:
    if query is None:
        return []
    if isinstance(query, str):
        # What the server sees: the raw query string ("+" is a space, as in forms).
        return parse_qsl(query.removeprefix("?"), keep_blank_values=True)
    items = query.items() if isinstance(query, Mapping) else query
    pairs = []
    for key, value in items:
        values = value if isinstance(value, (list, tuple)) else [value]
        # None is dropped, as HTTP clients (requests, httpx) drop it from the URL.
        pairs.extend((str(key), str(item)) for item in values if item is not None)
    return pairs


def canonical_query(query: QueryInput) -> str:
    """``k=v`` pairs, each side percent-encoded (RFC 3986), sorted, joined by "&".

    Pairs are sorted by encoded key, then encoded value (plain byte order of
    ASCII text, the same in every language). Repeated keys keep every value.
    ``query`` is a raw query string (``"b=2&a=1"``), a mapping (values may be
    lists) or a sequence of pairs. No query gives "".
    """
    encoded = sorted((_encode(key), _encode(value)) for key, value in _query_pairs(query))
    return "&".join(f"{key}={value}" for key, value in encoded)


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def canonical_request(
    *,
    timestamp_ms: int | str,
    recv_window_ms: int | str,
    method: str,
    path: str,
    query: QueryInput,
    body: bytes,
) -> str:
    """The text a request's signature covers (see the module docstring)."""
    return "\n".join(
        [str(timestamp_ms), str(recv_window_ms), method.upper(), path, canonical_query(query), body_sha256(body)]
    )


def sign(secret: str, canonical: str) -> str:
    """Lower-case hex HMAC-SHA256 of ``canonical`` keyed with ``secret``."""
    return hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def signatures_equal(expected: str, supplied: str) -> bool:
    """Constant-time comparison, so timing reveals nothing about the expected value."""
    return hmac.compare_digest(expected.encode(), supplied.lower().encode())


_last_timestamp_ms: dict[str, int] = {}
_timestamps = threading.Lock()


def _fresh_timestamp_ms(key_id: str) -> int:
    """Now, in milliseconds, but later than any timestamp this process signed with ``key_id``
    before: the same request signed twice in one millisecond would be one signature, and
    the server refuses the second as a replay (a fast server answers in less than that)."""
    with _timestamps:
        timestamp_ms = max(time.time_ns() // 1_000_000, _last_timestamp_ms.get(key_id, 0) + 1)
        _last_timestamp_ms[key_id] = timestamp_ms
        return timestamp_ms


def signed_headers(
    key_id: str,
    secret: str,
    method: str,
    path: str,
    query: QueryInput = None,
    body: bytes | str = b"",
    timestamp_ms: int | None = None,
    recv_window_ms: int = RECV_WINDOW_MS_DEFAULT,
) -> dict[str, str]:
    """The four headers that sign one request; send ``body`` byte for byte.

    Sign each attempt anew: the server refuses a signature it has already
    seen (a retry with the same headers is a replay). Without ``timestamp_ms``,
    the timestamp is now, made distinct per key within this process.
    """
    if "?" in path:
        raise ValueError("pass the query separately from the path")
    if isinstance(body, str):
        body = body.encode()
    if timestamp_ms is None:
        timestamp_ms = _fresh_timestamp_ms(key_id)
    canonical = canonical_request(
        timestamp_ms=timestamp_ms, recv_window_ms=recv_window_ms, method=method, path=path, query=query, body=body
    )
    return {
        HEADER_API_KEY: key_id,
        HEADER_TIMESTAMP: str(timestamp_ms),
        HEADER_RECV_WINDOW: str(recv_window_ms),
        HEADER_SIGNATURE: sign(secret, canonical),
    }
