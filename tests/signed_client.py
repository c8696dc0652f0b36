"""A test client that signs every request with an API key, as bots do."""

from __future__ import annotations

import json as jsonlib
from urllib.parse import urlencode

from rest_framework.test import APIClient

from exchange.apikeys.signing import signed_headers


class SignedClient:
    """Wraps DRF's APIClient; ``sign`` keyword arguments go to ``signed_headers``.

    ``headers`` are sent as well and win over the signed ones, so a test can
    tamper with a header after signing.
    """

    def __init__(self, key_id: str, secret: str, client: APIClient | None = None, **extra):
        self.key_id = key_id
        self.secret = secret
        self.client = client or APIClient()
        self.extra = extra  # e.g. REMOTE_ADDR="203.0.113.7"

    def request(self, method: str, path: str, *, query=None, json=None, body: bytes | None = None,
                headers: dict | None = None, sign: dict | None = None, **extra):
        if body is None:
            body = jsonlib.dumps(json).encode() if json is not None else b""
        signed = signed_headers(self.key_id, self.secret, method, path, query, body, **(sign or {}))
        url = path
        if query:
            url += "?" + (query if isinstance(query, str) else urlencode(query, doseq=True))
        return self.client.generic(
            method, url, body, content_type="application/json",
            headers={**signed, **(headers or {})}, **{**self.extra, **extra},
        )

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json=None, **kwargs):
        return self.request("POST", path, json=json, **kwargs)

    def delete(self, path: str, **kwargs):
        return self.request("DELETE", path, **kwargs)
