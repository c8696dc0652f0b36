"""Encryption of API key secrets at rest (Fernet: AES-128-CBC + HMAC-SHA256).

The server needs each plain secret to check HMAC signatures, so secrets are
stored encrypted, never hashed and never in clear.

Keys come from ``API_KEY_ENCRYPTION_KEY``: a comma-separated list of Fernet
keys (URL-safe base64 of 32 bytes, ``Fernet.generate_key()``). The first key
encrypts; every key decrypts. To rotate: put a new key first, keep the old
ones, run ``manage.py api_keys_reencrypt``, then drop the old keys.

When the variable is unset (local runs and tests), one key is derived from
``SECRET_KEY`` (and one from each of ``SECRET_KEY_FALLBACKS``) with HKDF, so
nothing needs configuring. Production settings require the variable, so that
rotating ``SECRET_KEY`` can never make the stored secrets unreadable.
"""

from __future__ import annotations

import base64
import binascii
import functools

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

_HKDF_SALT = b"exchange.apikeys"
_HKDF_INFO = b"api key secret encryption v1"


def derive_key(secret_key: str) -> bytes:
    """A Fernet key derived from a Django SECRET_KEY."""
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO).derive(secret_key.encode())
    return base64.urlsafe_b64encode(raw)


def validate_key(key: str) -> None:
    """Raise ImproperlyConfigured unless ``key`` is URL-safe base64 of 32 bytes."""
    try:
        raw = base64.urlsafe_b64decode(key.encode())
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise ImproperlyConfigured(
            "API_KEY_ENCRYPTION_KEY must be a comma-separated list of URL-safe base64 encodings of 32 bytes "
            "(generate one with: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
        )


def configured_keys() -> tuple[bytes, ...]:
    keys = tuple(key for key in settings.API_KEY_ENCRYPTION_KEYS if key)
    if keys:
        for key in keys:
            validate_key(key)
        return tuple(key.encode() for key in keys)
    secret_keys = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return tuple(derive_key(secret_key) for secret_key in secret_keys)


@functools.lru_cache(maxsize=8)
def _multi_fernet(keys: tuple[bytes, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def _fernet() -> MultiFernet:
    # Keyed on the configuration, so a settings override takes effect at once.
    return _multi_fernet(configured_keys())


def secret_encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode("ascii")


def secret_decrypt(token: str) -> str:
    """The plain secret; raises ``InvalidToken`` when no configured key opens it."""
    return _fernet().decrypt(token.encode("ascii")).decode()


def secret_reencrypt(token: str) -> str:
    """The same secret encrypted with the first (current) key."""
    return _fernet().rotate(token.encode("ascii")).decode("ascii")


__all__ = ["InvalidToken", "derive_key", "secret_decrypt", "secret_encrypt", "secret_reencrypt", "validate_key"]
