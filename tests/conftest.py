"""Shared fixtures.

The embedded PostgreSQL and Redis for the test run start once, when pytest
loads the test settings (see exchange.settings.test and exchange.runtime);
pytest-django creates the test database on that server. Set DATABASE_URL /
REDIS_URL to run the suite against other servers.
"""

import pytest
from rest_framework.test import APIClient

from exchange.core import localcache
from exchange.core.redis import get_redis
from exchange.roles import roles_sync
from tests.factories import UserFactory, login_staff


@pytest.fixture(autouse=True)
def fresh_local_caches():
    """Each test starts with empty per-process caches: rows cached by an earlier
    test (whose database state was rolled back) must not leak into it."""
    localcache.reset()
    yield


@pytest.fixture
def redis_app():
    """The application Redis database, empty at the start and end of the test."""
    client = get_redis()
    client.flushdb()
    yield client
    client.flushdb()


@pytest.fixture
def redis_down(settings, tmp_path):
    """Point the application's Redis client at a socket where no server listens."""
    settings.REDIS_APP_URL = f"unix://{tmp_path}/no-redis.sock"
    get_redis.cache_clear()
    yield
    get_redis.cache_clear()


@pytest.fixture
def api_client():
    return APIClient()


@pytest.fixture
def staff(client):
    """``staff(GROUP)``: log ``client`` in (second factor passed) as a new non-superuser member of a
    back-office group."""

    def login(group: str):
        user = UserFactory(username=f"staff-{group.lower()}", is_staff=True)
        user.groups.add(roles_sync()[group])
        login_staff(client, user)
        return user

    return login


@pytest.fixture
def admin_client(db, admin_user):
    """pytest-django's superuser client, signed in past the second factor as the back office requires."""
    from django.test import Client

    client = Client()
    login_staff(client, admin_user)
    return client
