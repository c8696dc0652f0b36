"""Array literals for the batch's set-based statements (bound on the server: ``exchange.core.sql``).

Django's cursor binds parameters on the client, quoting every element of the
large arrays the batch sends. Here numbers travel as one array literal string
("{1,2.5,NULL}") cast on the server, and lists of strings as binary arrays:
building one string is far cheaper than adapting thousands of values one by
one (the same reasoning as ``wallet.ledger``).
"""

from __future__ import annotations

from typing import Iterable


def array_literal(values: Iterable) -> str:
    """A PostgreSQL array literal of numbers (int or Decimal) or None: "{1,2.5,NULL}"."""
    return "{" + ",".join("NULL" if value is None else str(value) for value in values) + "}"


def tid_literal(rows: Iterable) -> str:
    """A PostgreSQL array literal of row addresses: '{"(0,1)","(3,7)"}'."""
    return "{" + ",".join(f'"{row}"' for row in rows) + "}"


def bool_literal(values: Iterable[bool]) -> str:
    return "{" + ",".join("t" if value else "f" for value in values) + "}"
