"""Celery tasks of the audit trail: chaining (beat, every AUDIT_CHAIN_INTERVAL_S) and
retention (beat, every RETENTION_INTERVAL_S)."""

from __future__ import annotations

from celery import shared_task

from exchange.audit import chain, retention


@shared_task(name="exchange.audit.tasks.audit_chain", ignore_result=True)
def audit_chain() -> int:
    return chain.audit_chain()


@shared_task(name="exchange.audit.tasks.retention_enforce", ignore_result=True)
def retention_enforce() -> dict[str, int]:
    return retention.retention_enforce()
