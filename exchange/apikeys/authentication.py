"""DRF authentication of requests signed with an API key (scheme: ``signing.py``).

A request without ``X-API-KEY`` is left to the next authentication class
(the session). A request with it is either authenticated here, with
``request.auth`` set to the ``ApiKey``, or refused with 401 and a stable
code; it never falls through to the session, so a key-signed request needs
no CSRF token and a bad key is never silently ignored.

The checks and their order are ``exchange.apikeys.credentials``' (shared with
the fast order path): headers well formed, timestamp inside the receive
window, key exists, signature matches; only a caller who holds the secret
learns that the key is revoked, expired, limited to other IPs or that the
request is a replay. A client that fails too often (per IP and per key id)
is refused with 429 until its failures age out.
"""

from __future__ import annotations

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from exchange.apikeys import credentials as creds
from exchange.apikeys.credentials import ApiKeyAuthenticationFailed
from exchange.apikeys.services import api_key_mark_used
from exchange.core import localcache
from exchange.core.net import client_ip
from exchange.core.throttling import ADMITTED, REPLAYED, Admission, auth_failure_record

__all__ = ["ApiKeyAuthentication", "ApiKeyAuthenticationFailed"]


def _header(request, name: str) -> str | None:
    return request.META.get("HTTP_" + name.upper().replace("-", "_"))


class ApiKeyAuthentication(BaseAuthentication):
    """Authenticates ``X-API-KEY`` / ``X-TIMESTAMP`` / ``X-RECV-WINDOW`` / ``X-SIGNATURE`` requests."""

    def authenticate_header(self, request) -> str:
        # Being first in DEFAULT_AUTHENTICATION_CLASSES, this also makes an
        # unauthenticated request a 401 (with this header) rather than a 403.
        return 'ApiKey realm="api"'

    def authenticate(self, request):
        query_string = request.META.get("QUERY_STRING", "")
        ip = client_ip(request)
        key_id = None
        try:
            headers = creds.parse_headers(lambda name: _header(request, name), query_string=query_string)
            if headers is None:
                return None
            key_id = headers.key_id
            localcache.refresh()
            credentials = creds.credentials_get(key_id)
            if credentials is None:
                raise creds.unknown_key()
            creds.check_signature(credentials, headers, method=request.method, path=request.path,
                                  query_string=query_string, body=request.body)
            now = timezone.now()
            creds.check_state(credentials, client_ip=ip, now=now)
            status, wait_s = (Admission().check_failures(ip=ip, key_id=key_id)
                              .check_replay(headers.signature, creds.replay_ttl_ms(headers)).run())
            if status == REPLAYED:
                raise creds.replayed()
            if status != ADMITTED:
                raise exceptions.Throttled(wait_s)
        except ApiKeyAuthenticationFailed:
            wait_s = auth_failure_record(ip=ip, key_id=key_id)
            if wait_s is not None:
                raise exceptions.Throttled(wait_s) from None
            raise
        api_key = credentials.models()
        api_key_mark_used(api_key=api_key, now=now)
        creds.note_used(api_key.pk, api_key.last_used_at)
        return api_key.user, api_key
