"""Celery tasks of the outbox, routed to the ``outbox`` queue (CELERY_TASK_ROUTES).

``outbox_relay`` is kicked after each commit that wrote events (at most one
queued at a time, see ``services.outbox_kick_on_commit``) and by beat every
OUTBOX_RELAY_INTERVAL_S as a safety net; ``outbox_prune`` runs daily.
"""

from __future__ import annotations

from celery import shared_task

from exchange.outbox import relay, services


@shared_task(name="exchange.outbox.tasks.outbox_relay", ignore_result=True)
def outbox_relay() -> int:
    # Clear the kick flag first: a commit after this point kicks again, one
    # before it is seen by this run.
    from exchange.core.redis import get_redis

    try:
        get_redis().delete(services.KICK_KEY)
    except Exception:  # noqa: BLE001 - the relay needs the database and the bus, not this flag
        pass
    return relay.outbox_relay().published


@shared_task(name="exchange.outbox.tasks.outbox_prune", ignore_result=True)
def outbox_prune() -> int:
    return services.outbox_prune()
