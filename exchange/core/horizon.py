"""Reading an append-only table in id order without missing a late commit.

Ids come from a sequence when a row is inserted, not when its transaction
commits: transaction A can insert id 10, transaction B id 11, and B commit
first. A reader that walks the table by id (the outbox relay publishing
events, the audit trail chaining rows) and remembers "everything up to 11 is
done" would never see row 10; one that takes rows as they become visible
would see 11 before 10.

The fix used here: every such row records the id of the transaction that
wrote it (``TransactionIdField``: ``xid8``, set by the database), and a
reader only takes rows written by transactions older than the oldest
transaction still running when its snapshot was taken
(``pg_snapshot_xmin(pg_current_snapshot())``). Every transaction below that
horizon has committed or rolled back, so the set of rows below it is final:
no row can appear there later. A reader that processes everything below the
horizon, in id order, and then waits for the horizon to move, misses nothing
and never has to revisit what it processed. A row waits for at most as long
as the longest transaction that was open when it committed.

``xid8`` is 64 bits (PostgreSQL 13 and later): it does not wrap around.
"""

from __future__ import annotations

from django.db import models

# The oldest transaction id still running in the current snapshot: every
# transaction below it has finished.
HORIZON_SQL = "pg_snapshot_xmin(pg_current_snapshot())"


def below_horizon(column: str = "txid") -> str:
    """A SQL condition: the row's writer finished before the current snapshot's horizon."""
    return f"{column} < {HORIZON_SQL}"


class TransactionIdField(models.Field):
    """The id of the transaction that inserted the row (``xid8``), set by PostgreSQL.

    Not editable and never written by the application: the column's default
    is ``pg_current_xact_id()``.
    """

    description = "PostgreSQL transaction id (xid8) of the inserting transaction"

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("editable", False)
        kwargs["db_default"] = models.Func(function="pg_current_xact_id", output_field=self)
        super().__init__(*args, **kwargs)

    def deconstruct(self):
        name, path, args, kwargs = super().deconstruct()
        kwargs.pop("db_default", None)
        kwargs.pop("editable", None)
        return name, path, args, kwargs

    def db_type(self, connection) -> str:
        return "xid8"

    def from_db_value(self, value, expression, connection):
        return None if value is None else int(value)
