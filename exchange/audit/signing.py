"""HMAC signatures of the audit chain's ends (the head and retention checkpoints).

A hash chain alone proves that no row inside it changed, but whoever can
write the tables could recompute every hash after an edit, or cut rows off
either end and move the end markers. The ends are therefore signed with a
key the database does not hold: ``AUDIT_SIGNING_KEY``, a comma-separated
list of secrets (32 characters or more); the first signs, every one
verifies, so a key is rotated by putting a new one first and dropping the
old one once no checkpoint signed with it is still the latest.

When the variable is unset (local runs and tests) one key is derived from
``SECRET_KEY`` (and ``SECRET_KEY_FALLBACKS``); production settings require
the variable. Only the processes that chain and enforce retention (the
Celery worker and ``manage.py``) need it.
"""

from __future__ import annotations

import hashlib
import hmac

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

KEY_LENGTH_MIN = 32


def _derive(secret_key: str) -> bytes:
    return hmac.new(secret_key.encode(), b"exchange.audit chain signature v1", hashlib.sha256).digest()


def signing_keys() -> list[bytes]:
    configured = [key for key in settings.AUDIT_SIGNING_KEYS if key]
    for key in configured:
        if len(key) < KEY_LENGTH_MIN:
            raise ImproperlyConfigured(f"Each AUDIT_SIGNING_KEY must be at least {KEY_LENGTH_MIN} characters long "
                                       "(make one with: python -c 'import secrets; print(secrets.token_hex(32))')")
    if configured:
        return [key.encode() for key in configured]
    return [_derive(key) for key in [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]]


def sign(message: str) -> str:
    return hmac.new(signing_keys()[0], message.encode(), hashlib.sha256).hexdigest()


def signature_valid(message: str, signature: str) -> bool:
    return any(
        hmac.compare_digest(hmac.new(key, message.encode(), hashlib.sha256).hexdigest(), signature or "")
        for key in signing_keys()
    )
