"""Server-side binding for the batch's set-based statements.

Django's cursor binds parameters on the client, quoting every element of the
large arrays the batch sends. Here numbers travel as one array literal string
("{1,2.5,NULL}") cast on the server, and lists of strings as binary arrays:
building one string is far cheaper than adapting thousands of values one by
one (the same reasoning as ``wallet.ledger``).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable

import psycopg
from django.db import connection


def array_literal(values: Iterable) -> str:
    """A PostgreSQL array literal of numbers (int or Decimal) or None: "{1,2.5,NULL}"."""
    return "{" + ",".join("NULL" if value is None else str(value) for value in values) + "}"


def tid_literal(rows: Iterable) -> str:
    """A PostgreSQL array literal of row addresses: '{"(0,1)","(3,7)"}'."""
    return "{" + ",".join(f'"{row}"' for row in rows) + "}"


def bool_literal(values: Iterable[bool]) -> str:
    return "{" + ",".join("t" if value else "f" for value in values) + "}"


@contextmanager
def server_cursor():
    """A server-side-binding cursor on Django's connection (same session and transaction)."""
    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        yield cursor
