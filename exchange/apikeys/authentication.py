"""DRF authentication of requests signed with an API key (scheme: ``signing.py``).

A request without ``X-API-KEY`` is left to the next authentication class
(the session). A request with it is either authenticated here, with
``request.auth`` set to the ``ApiKey``, or refused with 401 and a stable
code; it never falls through to the session, so a key-signed request needs
no CSRF token and a bad key is never silently ignored.

Checks, cheapest and least revealing first: headers well formed, timestamp
inside the receive window, key exists, signature matches; only a caller who
holds the secret learns that the key is revoked, expired, limited to other
IPs or that the request is a replay.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import time

import redis
from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from exchange.apikeys import signing
from exchange.apikeys.encryption import InvalidToken, secret_decrypt
from exchange.apikeys.models import ApiKey
from exchange.apikeys.selectors import api_key_get_for_authentication
from exchange.apikeys.services import api_key_mark_used
from exchange.core.errors import ServiceUnavailable
from exchange.core.net import client_ip, parse_ip
from exchange.core.redis import get_redis

logger = logging.getLogger(__name__)

_DIGITS = re.compile(r"^[0-9]{1,16}$")
_HEX_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
REPLAY_KEY_PREFIX = "apikey:replay:"


class ApiKeyAuthenticationFailed(exceptions.AuthenticationFailed):
    """401 with a stable code; ``field`` names the offending header."""

    def __init__(self, code: str, message: str, *, field: str | None = None, **extra):
        super().__init__(message, code=code)
        self.field = field
        self.extra = extra


def _header(request, name: str) -> str | None:
    return request.META.get("HTTP_" + name.upper().replace("-", "_"))


@functools.lru_cache(maxsize=1024)
def _network(entry: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(entry)


def _check_ip(api_key: ApiKey, request) -> None:
    if not api_key.ip_allowlist:
        return
    address = parse_ip(client_ip(request))
    if address is None or not any(address in _network(entry) for entry in api_key.ip_allowlist):
        raise ApiKeyAuthenticationFailed("IP_NOT_ALLOWED", "This API key may not be used from your IP address.")


class ApiKeyAuthentication(BaseAuthentication):
    """Authenticates ``X-API-KEY`` / ``X-TIMESTAMP`` / ``X-RECV-WINDOW`` / ``X-SIGNATURE`` requests."""

    def authenticate_header(self, request) -> str:
        # Being first in DEFAULT_AUTHENTICATION_CLASSES, this also makes an
        # unauthenticated request a 401 (with this header) rather than a 403.
        return 'ApiKey realm="api"'

    def authenticate(self, request):
        key_id = _header(request, signing.HEADER_API_KEY)
        if key_id is None:
            return None
        timestamp_text = _header(request, signing.HEADER_TIMESTAMP)
        recv_window_text = _header(request, signing.HEADER_RECV_WINDOW)
        signature = _header(request, signing.HEADER_SIGNATURE)
        for name, value in ((signing.HEADER_TIMESTAMP, timestamp_text), (signing.HEADER_SIGNATURE, signature)):
            if not value:
                raise ApiKeyAuthenticationFailed(
                    "MISSING_AUTH_HEADER", f"{name} is required with {signing.HEADER_API_KEY}.", field=name
                )
        if not _DIGITS.match(timestamp_text):
            raise ApiKeyAuthenticationFailed(
                "INVALID_TIMESTAMP",
                "X-TIMESTAMP must be milliseconds since the Unix epoch.",
                field=signing.HEADER_TIMESTAMP,
            )
        if recv_window_text is None:
            recv_window_text = str(signing.RECV_WINDOW_MS_DEFAULT)
        if not _DIGITS.match(recv_window_text) or not 0 < int(recv_window_text) <= signing.RECV_WINDOW_MS_MAX:
            raise ApiKeyAuthenticationFailed(
                "INVALID_RECV_WINDOW",
                f"X-RECV-WINDOW must be milliseconds between 1 and {signing.RECV_WINDOW_MS_MAX}.",
                field=signing.HEADER_RECV_WINDOW,
            )
        self._check_timestamp(int(timestamp_text), int(recv_window_text))

        api_key = api_key_get_for_authentication(key_id=key_id) if 0 < len(key_id) <= 64 else None
        if api_key is None:
            raise ApiKeyAuthenticationFailed("INVALID_API_KEY", "Unknown API key.", field=signing.HEADER_API_KEY)
        self._check_signature(request, api_key, signature, timestamp_text, recv_window_text)

        now = timezone.now()
        status = api_key.status_at(now)
        if status == ApiKey.Status.REVOKED:
            raise ApiKeyAuthenticationFailed("API_KEY_REVOKED", "This API key has been revoked.")
        if status == ApiKey.Status.EXPIRED:
            raise ApiKeyAuthenticationFailed("API_KEY_EXPIRED", "This API key has expired.")
        if not api_key.user.is_active:
            raise ApiKeyAuthenticationFailed("ACCOUNT_DISABLED", "The account of this API key is disabled.")
        _check_ip(api_key, request)
        self._check_not_replayed(signature.lower(), int(recv_window_text))

        api_key_mark_used(api_key=api_key, now=now)
        return api_key.user, api_key

    def _check_timestamp(self, timestamp_ms: int, recv_window_ms: int) -> None:
        now_ms = time.time_ns() // 1_000_000
        skew_ms = settings.API_KEY_CLOCK_SKEW_MS
        if now_ms - timestamp_ms > recv_window_ms:
            message = (
                f"The request was signed {now_ms - timestamp_ms} ms ago, "
                f"more than X-RECV-WINDOW ({recv_window_ms} ms)."
            )
        elif timestamp_ms - now_ms > skew_ms:
            message = f"X-TIMESTAMP is {timestamp_ms - now_ms} ms ahead of the server clock (at most {skew_ms} ms allowed)."
        else:
            return
        raise ApiKeyAuthenticationFailed(
            "TIMESTAMP_OUTSIDE_RECV_WINDOW", message, field=signing.HEADER_TIMESTAMP, server_time_ms=now_ms
        )

    def _check_signature(self, request, api_key: ApiKey, signature: str, timestamp: str, recv_window: str) -> None:
        if not _HEX_SHA256.match(signature):
            raise ApiKeyAuthenticationFailed(
                "INVALID_SIGNATURE", "X-SIGNATURE must be 64 hex digits (HMAC-SHA256).", field=signing.HEADER_SIGNATURE
            )
        try:
            secret = secret_decrypt(api_key.secret_encrypted)
        except InvalidToken:
            # Configuration error (the key that encrypted it is gone), not the caller's.
            logger.error("API key %s: secret cannot be decrypted with the configured keys", api_key.pk)
            raise ServiceUnavailable("API key verification is unavailable; retry later.") from None
        canonical = signing.canonical_request(
            timestamp_ms=timestamp,
            recv_window_ms=recv_window,
            method=request.method,
            path=request.path,
            query=request.META.get("QUERY_STRING", ""),
            body=request.body,
        )
        if not signing.signatures_equal(signing.sign(secret, canonical), signature):
            raise ApiKeyAuthenticationFailed(
                "INVALID_SIGNATURE", "The signature does not match the request.", field=signing.HEADER_SIGNATURE
            )

    def _check_not_replayed(self, signature: str, recv_window_ms: int) -> None:
        # The signature stays acceptable until timestamp + recv_window, which is
        # at most recv_window + skew from now: remember it that long.
        ttl_ms = recv_window_ms + settings.API_KEY_CLOCK_SKEW_MS
        try:
            first = get_redis().set(REPLAY_KEY_PREFIX + signature, 1, nx=True, px=ttl_ms)
        except redis.RedisError as exc:
            logger.error("replay check unavailable: %s", exc)
            raise ServiceUnavailable() from None
        if not first:
            raise ApiKeyAuthenticationFailed(
                "REPLAYED_REQUEST", "This signature was already used; sign every request anew."
            )
