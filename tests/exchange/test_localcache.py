"""Per-process caches and the shared change token (exchange/core/localcache.py)."""

import time

import pytest
from django.db import transaction

from exchange.core import localcache
from exchange.models import Market
from tests.factories import UserFactory


@pytest.fixture
def counting_cache():
    """A cache whose loader counts how often it ran, per key."""
    loads: dict[str, int] = {}

    def loader(key):
        loads[key] = loads.get(key, 0) + 1
        return f"{key}#{loads[key]}"

    cache = localcache.LocalCache("test", loader, max_age_s=60)
    yield cache, loads
    localcache._caches.remove(cache)


def test_a_moved_token_drops_every_cache(redis_app, counting_cache):
    """Values are served from memory until the token in Redis moves; then they are loaded again."""
    cache, loads = counting_cache
    localcache.refresh(force=True)
    assert cache.get("a") == "a#1"
    assert cache.get("a") == "a#1"
    localcache.refresh(force=True)
    assert cache.get("a") == "a#1", "the token did not move"

    localcache.config_changed()  # outside a transaction: at once
    cache.put("b", "stale")  # as if another process still held it
    localcache.refresh(force=True)
    assert cache.get("a") == "a#2"
    assert cache.get("b") == "b#1"


def test_a_lost_token_counts_as_a_change(redis_app, counting_cache):
    """Redis losing the token (a flush, a restart without persistence) drops the caches too."""
    cache, _ = counting_cache
    localcache.config_changed()
    localcache.refresh(force=True)
    cache.get("a")
    redis_app.delete(localcache.VERSION_KEY)
    assert localcache.observe(redis_app.get(localcache.VERSION_KEY)) is True
    assert cache.peek("a") is None


@pytest.mark.django_db(transaction=True)
def test_the_token_moves_only_after_commit(redis_app):
    """A change inside a transaction moves the token once, when it commits, and not at all on rollback."""
    before = redis_app.get(localcache.VERSION_KEY)
    with transaction.atomic():
        localcache.config_changed()
        localcache.config_changed()
        assert redis_app.get(localcache.VERSION_KEY) == before
    after = redis_app.get(localcache.VERSION_KEY)
    assert after != before

    with pytest.raises(RuntimeError):
        with transaction.atomic():
            localcache.config_changed()
            raise RuntimeError
    assert redis_app.get(localcache.VERSION_KEY) == after


@pytest.mark.django_db(transaction=True)
def test_watched_models_move_the_token_except_bookkeeping_saves(redis_app):
    """Saving a market or a user moves the token; a login stamping last_login does not."""
    user = UserFactory()
    token = redis_app.get(localcache.VERSION_KEY)
    user.last_login = user.date_joined
    user.save(update_fields=["last_login"])
    assert redis_app.get(localcache.VERSION_KEY) == token
    user.is_active = False
    user.save(update_fields=["is_active"])
    assert redis_app.get(localcache.VERSION_KEY) != token

    token = redis_app.get(localcache.VERSION_KEY)
    Market.objects.update()  # a bulk update sends no signal: services call config_changed() themselves
    assert redis_app.get(localcache.VERSION_KEY) == token


def test_refresh_reads_redis_at_most_every_check_interval(redis_app, counting_cache):
    """Between two reads of the token a process serves from memory; after the interval it reads again."""
    cache, _ = counting_cache
    localcache.refresh(force=True)
    cache.get("a")
    redis_app.set(localcache.VERSION_KEY, "moved-elsewhere")
    localcache.refresh()
    assert cache.peek("a") is not None, "read again too early"
    time.sleep(localcache.CHECK_EVERY_S + 0.05)
    localcache.refresh()
    assert cache.peek("a") is None
