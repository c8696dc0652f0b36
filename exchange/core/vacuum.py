"""System check: autovacuum runs on the tables the order path writes (exchange.W013).

The order path keeps its statements prepared (``exchange.core.sql``, the
web's asyncpg connections, the placement functions). PostgreSQL plans a
prepared statement once for all ("generic plan") from what it knows of the
tables at that moment, and keeps that plan until the tables' statistics
change, which only ANALYZE does. On a new installation the tables are nearly
empty, so the first plans scan them whole, which is then the cheapest way.
Autovacuum analyzes a table soon after it has grown by a tenth, and each of
its ANALYZE runs replaces those plans. Without it, they stay for the life of
each connection, and every batch of the matcher scans every order ever
placed (docs/BENCHMARKS.md, "A slow VM, stale plans and where PostgreSQL's
time goes"). Autovacuum also prunes the dead row versions that each order
update and each balance change leave behind.

``manage.py check --deploy --database default`` warns when autovacuum is off
on the server, when the statistics it needs are not collected
(``track_counts``), or when it is turned off for one of these tables.
"""

from __future__ import annotations

from django.core.checks import Tags, Warning, register
from django.db import connection

_OFF = ("false", "off", "no", "0", "f", "n")


def _hot_tables() -> list[str]:
    from exchange.models import AuditLog
    from exchange.outbox.models import OutboxEvent
    from matching.models import MarketState
    from orders.models import Order, Trade
    from risk.models import RiskAlert
    from wallet.models import Account, Hold, LedgerEntry, LedgerTransaction

    return sorted(model._meta.db_table for model in (AuditLog, OutboxEvent, MarketState, Order, Trade, RiskAlert,
                                                      Account, Hold, LedgerEntry, LedgerTransaction))


def autovacuum_problems() -> list[str]:
    """What keeps autovacuum from the order path's tables, in words; empty when nothing does."""
    problems = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('autovacuum'), current_setting('track_counts')")
        autovacuum, track_counts = cursor.fetchone()
        if autovacuum != "on":
            problems.append("autovacuum is off on the server")
        if track_counts != "on":
            problems.append("track_counts is off, so autovacuum never learns what changed")
        cursor.execute(
            """
            SELECT c.relname FROM pg_class c
            WHERE c.relname = ANY(%s) AND c.relnamespace = to_regnamespace(current_schema())
              AND EXISTS (SELECT 1 FROM unnest(c.reloptions) AS o(option)
                          WHERE lower(split_part(o.option, '=', 1)) = 'autovacuum_enabled'
                            AND lower(split_part(o.option, '=', 2)) = ANY(%s))
            ORDER BY c.relname
            """,
            [_hot_tables(), list(_OFF)],
        )
        tables = [name for (name,) in cursor.fetchall()]
    if tables:
        problems.append(f"autovacuum_enabled is off for {', '.join(tables)}")
    return problems


@register(Tags.database, deploy=True)
def autovacuum_check(app_configs=None, databases=None, **kwargs):
    """exchange.W013 (with ``--database``): autovacuum does not reach the order path's tables."""
    if not databases or "default" not in databases:
        return []
    problems = autovacuum_problems()
    if not problems:
        return []
    return [Warning(
        "Autovacuum does not reach the order path's tables: " + "; ".join(problems) + ". The plans made while "
        "the tables were small stay, and the matcher and order entry slow down as orders accumulate.",
        hint="Keep autovacuum on (it is PostgreSQL's default), with track_counts on, and do not set "
             "autovacuum_enabled = false on these tables (docs/OPERATOR.md, 'Production checklist').",
        id="exchange.W013")]
