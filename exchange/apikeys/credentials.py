"""Verifying a signed request, step by step, for every door that accepts API keys.

The DRF authentication class (``authentication.py``) and the fast order
path (``orders.fastpath``) verify requests with these same steps, in this
order, so they refuse the same requests with the same codes:

1. ``parse_headers``: the four headers well formed, the timestamp inside the
   receive window, the query without a repeated key (no I/O);
2. ``credentials_get``: what verifying needs about the key, from a
   per-process cache (``exchange.core.localcache``: dropped within 0.25 s of
   a key being revoked or its user changed), so the secret is decrypted once
   per process rather than once per request;
3. ``check_signature`` (no I/O);
4. ``check_state``: revoked, expired, the user disabled, the client's IP not
   in the key's allowlist: revealed only to holders of the secret;
5. the replay check and failed-attempt throttle: one Redis script
   (``exchange.core.throttling.ADMISSION``), which the fast path sends in the
   same pipeline as everything else it needs from Redis.

Every failure raises ``ApiKeyAuthenticationFailed`` (401 with a stable code);
the caller records it with ``exchange.core.throttling.auth_failure_record``,
which answers 429 once an IP or a key id fails too often.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import logging
import re
import time
from dataclasses import dataclass
from urllib.parse import parse_qsl

from django.conf import settings
from rest_framework import exceptions

from exchange.apikeys import signing
from exchange.apikeys.encryption import InvalidToken, secret_decrypt
from exchange.apikeys.models import PERMISSIONS, READ, TRADE, WITHDRAW, ApiKey
from exchange.core.errors import ApplicationError, ServiceUnavailable
from exchange.core.localcache import LocalCache
from exchange.core.net import parse_ip

logger = logging.getLogger(__name__)

_DIGITS = re.compile(r"^[0-9]{1,16}$")
_HEX_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
KEY_ID_LENGTH_MAX = 64


class ApiKeyAuthenticationFailed(exceptions.AuthenticationFailed):
    """401 with a stable code; ``field`` names the offending header."""

    def __init__(self, code: str, message: str, *, field: str | None = None, **extra):
        super().__init__(message, code=code)
        self.code = code
        self.field = field
        self.extra = extra


@dataclass(frozen=True, slots=True)
class SignedHeaders:
    key_id: str
    timestamp: str
    recv_window: str
    signature: str

    @property
    def recv_window_ms(self) -> int:
        return int(self.recv_window)


def parse_headers(get_header, *, query_string: str) -> SignedHeaders | None:
    """The signing headers (``get_header(name)`` returns a header's value or None);
    None when the request carries no X-API-KEY (not key-signed)."""
    key_id = get_header(signing.HEADER_API_KEY)
    if key_id is None:
        return None
    timestamp = get_header(signing.HEADER_TIMESTAMP)
    recv_window = get_header(signing.HEADER_RECV_WINDOW)
    signature = get_header(signing.HEADER_SIGNATURE)
    for name, value in ((signing.HEADER_TIMESTAMP, timestamp), (signing.HEADER_SIGNATURE, signature)):
        if not value:
            raise ApiKeyAuthenticationFailed(
                "MISSING_AUTH_HEADER", f"{name} is required with {signing.HEADER_API_KEY}.", field=name
            )
    if not _DIGITS.match(timestamp):
        raise ApiKeyAuthenticationFailed(
            "INVALID_TIMESTAMP", "X-TIMESTAMP must be milliseconds since the Unix epoch.",
            field=signing.HEADER_TIMESTAMP,
        )
    if recv_window is None:
        recv_window = str(signing.RECV_WINDOW_MS_DEFAULT)
    if not _DIGITS.match(recv_window) or not 0 < int(recv_window) <= signing.RECV_WINDOW_MS_MAX:
        raise ApiKeyAuthenticationFailed(
            "INVALID_RECV_WINDOW",
            f"X-RECV-WINDOW must be milliseconds between 1 and {signing.RECV_WINDOW_MS_MAX}.",
            field=signing.HEADER_RECV_WINDOW,
        )
    _check_timestamp(int(timestamp), int(recv_window))
    _check_query(query_string)
    return SignedHeaders(key_id, timestamp, recv_window, signature)


def _check_timestamp(timestamp_ms: int, recv_window_ms: int) -> None:
    now_ms = time.time_ns() // 1_000_000
    skew_ms = settings.API_KEY_CLOCK_SKEW_MS
    if now_ms - timestamp_ms > recv_window_ms:
        message = f"The request was signed {now_ms - timestamp_ms} ms ago, more than X-RECV-WINDOW ({recv_window_ms} ms)."
    elif timestamp_ms - now_ms > skew_ms:
        message = f"X-TIMESTAMP is {timestamp_ms - now_ms} ms ahead of the server clock (at most {skew_ms} ms allowed)."
    else:
        return
    raise ApiKeyAuthenticationFailed(
        "TIMESTAMP_OUTSIDE_RECV_WINDOW", message, field=signing.HEADER_TIMESTAMP, server_time_ms=now_ms
    )


def _check_query(query_string: str) -> None:
    """A signed request may not repeat a query parameter: the canonical query sorts the
    pairs, so ``?market=A&market=B`` and ``?market=B&market=A`` share one signature,
    while the server reads only one of the values."""
    if "&" not in query_string:
        return
    seen = set()
    for name, _ in parse_qsl(query_string, keep_blank_values=True):
        if name in seen:
            raise ApplicationError(
                "REPEATED_QUERY_PARAMETER", f"The query parameter {name[:40]!r} appears more than once.", field=name[:40]
            )
        seen.add(name)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What verifying a request needs about one API key and its user (immutable, cached)."""

    pk: int
    key_id: str
    secret: str
    user_id: int
    user_active: bool
    permissions: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    expires_at: datetime.datetime | None
    revoked_at: datetime.datetime | None
    # The key's and its user's rows (field name -> value), to rebuild model
    # instances for DRF views without a query.
    api_key_row: tuple[tuple[str, object], ...] = ()
    user_row: tuple[tuple[str, object], ...] = ()

    def has_permission(self, permission: str) -> bool:
        return permission in self.permissions

    def models(self) -> ApiKey:
        """A fresh ``ApiKey`` with its ``user``, as the database holds them (up to the cache's freshness)."""
        from django.contrib.auth import get_user_model

        user_model = get_user_model()
        user = user_model.from_db("default", [name for name, _ in self.user_row], [value for _, value in self.user_row])
        api_key = ApiKey.from_db("default", [name for name, _ in self.api_key_row],
                                 [value for _, value in self.api_key_row])
        api_key.user = user
        last_used = _last_used.peek(self.pk)
        if last_used is not None and (api_key.last_used_at is None or last_used > api_key.last_used_at):
            api_key.last_used_at = last_used
        return api_key


def _credentials_load(key_id: str) -> Credentials | None:
    api_key = ApiKey.objects.select_related("user").filter(key_id=key_id).first()
    if api_key is None:
        return None
    try:
        secret = secret_decrypt(api_key.secret_encrypted)
    except InvalidToken:
        # Configuration error (the key that encrypted it is gone), not the caller's.
        logger.error("API key %s: secret cannot be decrypted with the configured keys", api_key.pk)
        raise ServiceUnavailable("API key verification is unavailable; retry later.") from None
    granted = {READ: True, TRADE: api_key.can_trade, WITHDRAW: api_key.can_withdraw}
    return Credentials(
        pk=api_key.pk, key_id=api_key.key_id, secret=secret, user_id=api_key.user_id,
        user_active=api_key.user.is_active, permissions=frozenset(p for p in PERMISSIONS if granted[p]),
        networks=tuple(_network(entry) for entry in api_key.ip_allowlist),
        expires_at=api_key.expires_at, revoked_at=api_key.revoked_at,
        api_key_row=_row(api_key), user_row=_row(api_key.user),
    )


def _row(instance) -> tuple[tuple[str, object], ...]:
    return tuple((field.attname, getattr(instance, field.attname)) for field in instance._meta.concrete_fields)


# When this process last recorded each key's use (``note_used``): the cached
# row's ``last_used_at`` does not move when the key's row is updated.
_last_used = LocalCache("api_key_last_used", max_age_s=3600.0)


def note_used(pk: int, when: datetime.datetime | None) -> None:
    if when is not None:
        _last_used.put(pk, when)


# Keys by key id, per process; unknown ids are not cached (an attacker cannot
# fill the cache, and failed attempts are throttled per IP and key id).
_credentials = LocalCache("api_keys", max_age_s=60.0)


def credentials_get(key_id: str) -> Credentials | None:
    """The key presented as X-API-KEY, or None if there is none (reads the database on a cache miss)."""
    if not 0 < len(key_id) <= KEY_ID_LENGTH_MAX:
        return None
    credentials = _credentials.peek(key_id)
    if credentials is None:
        credentials = _credentials_load(key_id)
        if credentials is not None:
            _credentials.put(key_id, credentials)
    return credentials


def credentials_cached(key_id: str) -> Credentials | None:
    """The key from this process's cache only (None: not cached; load it with ``credentials_get``)."""
    return _credentials.peek(key_id)


def unknown_key() -> ApiKeyAuthenticationFailed:
    return ApiKeyAuthenticationFailed("INVALID_API_KEY", "Unknown API key.", field=signing.HEADER_API_KEY)


def check_signature(credentials: Credentials, headers: SignedHeaders, *, method: str, path: str,
                    query_string: str, body: bytes) -> None:
    if not _HEX_SHA256.match(headers.signature):
        raise ApiKeyAuthenticationFailed(
            "INVALID_SIGNATURE", "X-SIGNATURE must be 64 hex digits (HMAC-SHA256).", field=signing.HEADER_SIGNATURE
        )
    canonical = signing.canonical_request(
        timestamp_ms=headers.timestamp, recv_window_ms=headers.recv_window, method=method, path=path,
        query=query_string, body=body,
    )
    if not signing.signatures_equal(signing.sign(credentials.secret, canonical), headers.signature):
        raise ApiKeyAuthenticationFailed(
            "INVALID_SIGNATURE", "The signature does not match the request.", field=signing.HEADER_SIGNATURE
        )


def check_state(credentials: Credentials, *, client_ip: str, now: datetime.datetime) -> None:
    if credentials.revoked_at is not None:
        raise ApiKeyAuthenticationFailed("API_KEY_REVOKED", "This API key has been revoked.")
    if credentials.expires_at is not None and credentials.expires_at <= now:
        raise ApiKeyAuthenticationFailed("API_KEY_EXPIRED", "This API key has expired.")
    if not credentials.user_active:
        raise ApiKeyAuthenticationFailed("ACCOUNT_DISABLED", "The account of this API key is disabled.")
    if credentials.networks:
        address = parse_ip(client_ip)
        if address is None or not any(address in network for network in credentials.networks):
            raise ApiKeyAuthenticationFailed("IP_NOT_ALLOWED", "This API key may not be used from your IP address.")


def replay_ttl_ms(headers: SignedHeaders) -> int:
    """How long a signature must be remembered: it stays acceptable until timestamp +
    recv_window, which is at most recv_window + the allowed clock skew from now."""
    return headers.recv_window_ms + settings.API_KEY_CLOCK_SKEW_MS


def replayed() -> ApiKeyAuthenticationFailed:
    return ApiKeyAuthenticationFailed("REPLAYED_REQUEST", "This signature was already used; sign every request anew.")


@functools.lru_cache(maxsize=1024)
def _network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(entry)
