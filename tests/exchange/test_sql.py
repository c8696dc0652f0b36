"""Server-side binding with prepared statements on Django's connection (exchange/core/sql.py)."""

import pytest
from django.db import DatabaseError, connection, transaction

from exchange.core.sql import server_cursor

pytestmark = pytest.mark.django_db

_STATEMENT = "SELECT %b::bigint + 1 AS prepared_probe"


def _prepared_statements() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [row[0] for row in cursor.fetchall()]


def test_a_server_cursor_prepares_its_statements_once_per_connection():
    """The plan is kept by the connection: a second execution reuses it, with new parameters."""
    with server_cursor() as cursor:
        cursor.execute(_STATEMENT, [1])
        assert cursor.fetchone() == (2,)
    with server_cursor() as cursor:
        cursor.execute(_STATEMENT, [41])
        assert cursor.fetchone() == (42,)
    prepared = [text for text in _prepared_statements() if "prepared_probe" in text]
    assert len(prepared) == 1, prepared


def test_django_cursors_and_unprepared_statements_stay_unprepared():
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 AS django_probe")
    with server_cursor() as cursor:
        cursor.execute("SELECT 1 AS one_off_probe", prepare=False)
    assert not [text for text in _prepared_statements() if "django_probe" in text or "one_off_probe" in text]


def test_errors_surface_as_djangos_and_the_transaction_rolls_back():
    with pytest.raises(DatabaseError):
        with transaction.atomic(), server_cursor() as cursor:
            cursor.execute("SELECT 1 / %b", [0])
    with server_cursor() as cursor:  # the connection is usable again
        cursor.execute(_STATEMENT, [2])
        assert cursor.fetchone() == (3,)
