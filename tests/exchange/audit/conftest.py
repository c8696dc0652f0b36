"""Audit fixtures: rows written through ``audit_log_record`` and a chain built for real.

Chaining only sees committed rows whose transactions all finished (the
horizon), so chain tests commit for real (``transactional_db``).
"""

from __future__ import annotations

import pytest
from django.db import connection

from exchange.audit.models import AuditLog
from exchange.audit.services import audit_log_record


def record(action="BALANCE_ADJUST", object_id=1, **kwargs) -> AuditLog:
    """One audit row with plausible content."""
    kwargs.setdefault("object_type", "wallet.ledgertransaction")
    kwargs.setdefault("after", {"amount": "1.5"})
    kwargs.setdefault("actor_system", "test")
    return audit_log_record(action=action, object_id=object_id, **kwargs)


def rows(action: str | None = None) -> list[AuditLog]:
    queryset = AuditLog.objects.order_by("id")
    return list(queryset.filter(action=action) if action else queryset)


@pytest.fixture
def superuser_sql():
    """Run SQL as the table owner with the audit triggers switched off: what an attacker with
    the database's keys, not the application's, could do."""

    def run(sql: str, params=()):
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
            try:
                cursor.execute(sql, params)
            finally:
                cursor.execute("SET session_replication_role = DEFAULT")

    return run
