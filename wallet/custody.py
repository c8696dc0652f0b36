"""Signed deposit notifications from the custody system (see docs/LEDGER.md).

The custody system POSTs JSON to /api/v1/custody/deposits with two headers:

    X-Custody-Timestamp: <unix seconds>
    X-Custody-Signature: hex(HMAC-SHA256(CUSTODY_WEBHOOK_SECRET, "<timestamp>." + raw body))

A request is accepted when the secret is configured, the timestamp is within
CUSTODY_WEBHOOK_TOLERANCE_S (5 minutes) of our clock and the signature
matches (compared in constant time). A replay within the window is harmless:
deposits are idempotent on (asset, txid).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from django.conf import settings
from rest_framework import status

from exchange.core.errors import ApplicationError

TIMESTAMP_HEADER = "X-Custody-Timestamp"
SIGNATURE_HEADER = "X-Custody-Signature"


def custody_signature(*, secret: str, timestamp: str, body: bytes) -> str:
    """The signature the custody system sends for ``body`` at ``timestamp``."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def custody_request_verify(*, body: bytes, timestamp: str | None, signature: str | None,
                           now: float | None = None) -> None:
    """Raise ApplicationError unless the request is signed with the shared secret and fresh."""
    secret = settings.CUSTODY_WEBHOOK_SECRET
    if not secret:
        raise ApplicationError(
            "CUSTODY_WEBHOOK_DISABLED",
            "The custody webhook is not configured (CUSTODY_WEBHOOK_SECRET is unset).",
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )
    if not timestamp or not signature:
        raise ApplicationError(
            "SIGNATURE_MISSING",
            f"Send the {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers.",
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    try:
        sent_at = int(timestamp)
    except ValueError:
        raise ApplicationError(
            "TIMESTAMP_INVALID", f"{TIMESTAMP_HEADER} must be unix seconds.", status_code=status.HTTP_401_UNAUTHORIZED
        ) from None
    now = time.time() if now is None else now
    if abs(now - sent_at) > settings.CUSTODY_WEBHOOK_TOLERANCE_S:
        raise ApplicationError(
            "TIMESTAMP_STALE",
            f"The request timestamp is more than {settings.CUSTODY_WEBHOOK_TOLERANCE_S} s from the server's clock.",
            status_code=status.HTTP_401_UNAUTHORIZED,
        )
    expected = custody_signature(secret=secret, timestamp=timestamp, body=body)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        raise ApplicationError(
            "SIGNATURE_INVALID", "The signature does not match the body.", status_code=status.HTTP_401_UNAUTHORIZED
        )
