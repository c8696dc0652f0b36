"""Per-process caches of what changes rarely, dropped everywhere within a second of a change.

Every order reads the same few rows: its market and assets, the API key that
signed it (with the decrypted secret and the user's state), the user's fee
rates, risk limits and restrictions. They change rarely, so each process
keeps them in memory (``LocalCache``), and every change to them moves one
shared token in Redis, ``exchange:config:version``, after its transaction
commits (``config_changed``). A process that sees the token differ from the
last one it saw drops every cache it holds (``observe``):

- the order-entry fast path reads the token in the Redis pipeline it sends
  for every order anyway, so a change takes effect on its next request;
- other readers call ``refresh()`` before using a cache: it reads the token
  at most every ``CHECK_EVERY_S``.

So a revoked key, a deactivated user or a halted market is refused by every
process within ``CHECK_EVERY_S`` (0.25 s) of its commit. The token is a fresh
random value on every change, never a counter, so that a Redis restart that
loses it, followed by new changes, can never bring back a value a process
saw before. A missing token is itself a value: processes drop their caches
when it disappears, and again when it reappears.

Which changes move the token: ``config_changed()`` calls in the services
that change these rows (API key revocation, market status changes applied by
a matcher...), and, as a safety net that also covers the back office and the
shell, ``post_save``/``post_delete`` of every model registered with
``watch()`` (each app registers its own in ``AppConfig.ready``), except saves
that only touch bookkeeping columns (``last_login``, ``last_used_at``).

If Redis is down when a change commits, the token cannot move; every entry
also expires after its cache's ``max_age_s``, which bounds how long such a
change can go unseen. (With Redis down the order path refuses orders anyway.)
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Callable, Generic, Hashable, TypeVar

import redis
from django.db import connection, transaction
from django.test.signals import setting_changed

from exchange.core.redis import get_redis

logger = logging.getLogger(__name__)

VERSION_KEY = "exchange:config:version"
CHECK_EVERY_S = 0.25

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_MISSING = object()
_caches: list["LocalCache"] = []
_state = {"seen": _MISSING, "checked_at": 0.0}
_lock = threading.Lock()


class LocalCache(Generic[K, V]):
    """A dict of loaded values, each kept at most ``max_age_s`` and dropped on any config change.

    ``loader(key)`` returns the value to cache (it may raise; nothing is then
    cached); ``get(key, load)`` may pass a loader of its own instead. Values
    must be immutable or treated as read-only by callers.
    """

    def __init__(self, name: str, loader: Callable[[K], V] | None = None, *, max_age_s: float = 60.0):
        self.name = name
        self.loader = loader
        self.max_age_s = max_age_s
        self._entries: dict[K, tuple[float, V]] = {}
        _caches.append(self)

    def get(self, key: K, load: Callable[[], V] | None = None) -> V:
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None and now - entry[0] < self.max_age_s:
            return entry[1]
        value = load() if load is not None else self.loader(key)
        self._entries[key] = (now, value)
        return value

    def peek(self, key: K, *, margin_s: float = 0.0):
        """The cached value, or ``None`` when absent, expired or expiring within
        ``margin_s`` (never loads)."""
        entry = self._entries.get(key)
        if entry is not None and time.monotonic() - entry[0] < self.max_age_s - margin_s:
            return entry[1]
        return None

    def load(self, key: K) -> V:
        """Load ``key`` now, whatever is cached, and keep it."""
        value = self.loader(key)
        self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = (time.monotonic(), value)

    def clear(self) -> None:
        self._entries.clear()


def clear_all() -> None:
    for cache in _caches:
        cache.clear()


def reset() -> None:
    """Drop every cache and forget the last token seen (a test starting afresh)."""
    clear_all()
    with _lock:
        _state["seen"] = _MISSING
        _state["checked_at"] = 0.0


def observe(token: bytes | str | None) -> bool:
    """Record the token read from Redis; drop every cache if it moved. Returns whether it moved."""
    if isinstance(token, bytes):
        token = token.decode()
    with _lock:
        _state["checked_at"] = time.monotonic()
        if token == _state["seen"]:
            return False
        _state["seen"] = token
    clear_all()
    return True


def current_token():
    """The token this process last saw (compare two reads to learn whether caches were dropped between)."""
    return _state["seen"]


def refresh(*, force: bool = False) -> None:
    """Read the token from Redis if it was last read more than CHECK_EVERY_S ago (or ``force``).

    A Redis error is raised to the caller: serving from caches that may be
    stale while nothing can tell is not an option on the order path.
    """
    if not force and time.monotonic() - _state["checked_at"] < CHECK_EVERY_S:
        return
    observe(get_redis().get(VERSION_KEY))


def _bump() -> None:
    try:
        get_redis().set(VERSION_KEY, uuid.uuid4().hex)
    except redis.RedisError:
        logger.error("could not publish a configuration change; caches catch up within their max age",
                     exc_info=True)
    clear_all()  # this process at least sees its own change at once


def watch(model, *, bookkeeping_fields: frozenset[str] = frozenset()) -> None:
    """Call ``config_changed()`` whenever a row of ``model`` is saved or deleted.

    A save with ``update_fields`` inside ``bookkeeping_fields`` (say a login
    stamping ``last_login``) changes nothing a cache holds and is ignored.
    """
    from django.db.models.signals import post_delete, post_save

    def on_save(sender, update_fields=None, **kwargs):
        if update_fields and set(update_fields) <= bookkeeping_fields:
            return
        config_changed()

    def on_delete(sender, **kwargs):
        config_changed()

    uid = f"localcache:{model._meta.label}"
    post_save.connect(on_save, sender=model, weak=False, dispatch_uid=uid)
    post_delete.connect(on_delete, sender=model, weak=False, dispatch_uid=uid)


def _on_setting_changed(**kwargs) -> None:
    clear_all()  # a test overriding settings (say the encryption keys) gets what it configured


setting_changed.connect(_on_setting_changed, dispatch_uid="localcache:setting_changed")


def config_changed() -> None:
    """Make every process drop its caches once the current transaction commits (now, outside one).

    This process drops its own at once as well (harmless if the transaction
    rolls back), so that the rest of the transaction reads the change."""
    if not connection.in_atomic_block:
        _bump()
        return
    clear_all()
    if any(callback is _bump for _, callback, _ in connection.run_on_commit):
        return
    transaction.on_commit(_bump)
