"""Server-side binding and prepared statements on Django's connection.

Django's cursor binds parameters on the client, quoting every element of the
large arrays the bulk statements send (the matcher's batch, the ledger, the
outbox), and it turns prepared statements off for connection poolers, so
PostgreSQL parses and plans every statement anew. ``server_cursor()`` gives a
psycopg cursor on the same connection (same session and transaction) that
binds on the server and prepares what it executes: the connection keeps each
statement's plan (psycopg's per-connection cache, least recently used first
out), so a statement run once per batch is parsed once per connection. Its
callers' statements are fixed texts; pass ``prepare=False`` for one that is
not. Django's own cursors still prepare nothing.

Preparing took a matcher's batch of one order from 5.7 to 4.9 ms, of ten
from 9.2 to 7.6 ms (docs/BENCHMARKS.md, "Issue 13: prepared statements, a
burst in one batch, a cheaper sweep"). Behind a pooler in transaction mode, use one that keeps prepared statements
(PgBouncer 1.21+ with ``max_prepared_statements``); docs/OPERATOR.md says so.

The bulk statements take numbers, booleans and row addresses as one array
literal string ("{1,2.5,NULL}") cast on the server, and strings as binary
arrays: building one string is far cheaper than psycopg adapting thousands of
values one by one.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import psycopg
from django.db import connection

# A statement is never prepared automatically at this count: only those
# executed with prepare=True are (psycopg ignores prepare=True while the
# threshold is None, as Django leaves it).
_PREPARE_EXPLICIT_ONLY = 2**31


def raw_connection() -> psycopg.Connection:
    """Django's psycopg connection, with explicit prepared statements allowed."""
    connection.ensure_connection()
    conn = connection.connection
    if conn.prepare_threshold is None:
        conn.prepare_threshold = _PREPARE_EXPLICIT_ONLY
    return conn


class _PreparingCursor(psycopg.Cursor):
    def execute(self, query, params=None, *, prepare: bool = True, binary: bool | None = None):
        return super().execute(query, params, prepare=prepare, binary=binary)


@contextmanager
def server_cursor() -> Iterator[psycopg.Cursor]:
    """A server-side-binding cursor on Django's connection that prepares its
    statements; errors surface as Django's."""
    conn = raw_connection()
    with connection.wrap_database_errors, _PreparingCursor(conn) as cursor:
        yield cursor


def array_literal(values: Iterable) -> str:
    """A PostgreSQL array literal of numbers (int or Decimal) or None: "{1,2.5,NULL}"."""
    return "{" + ",".join("NULL" if value is None else str(value) for value in values) + "}"


def tid_literal(rows: Iterable) -> str:
    """A PostgreSQL array literal of row addresses: '{"(0,1)","(3,7)"}'."""
    return "{" + ",".join(f'"{row}"' for row in rows) + "}"


def bool_literal(values: Iterable[bool]) -> str:
    """A PostgreSQL array literal of booleans: "{t,f}"."""
    return "{" + ",".join("t" if value else "f" for value in values) + "}"
