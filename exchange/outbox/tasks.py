"""Celery tasks of the outbox, routed to the ``outbox`` queue (CELERY_TASK_ROUTES).

The relay itself is not a task: it is a process of its own
(``manage.py run_outbox_relay``, see ``exchange.outbox.relay``).
``outbox_prune`` runs daily (beat).
"""

from __future__ import annotations

from celery import shared_task

from exchange.outbox import services


@shared_task(name="exchange.outbox.tasks.outbox_prune", ignore_result=True)
def outbox_prune() -> tuple[int, int]:
    return services.outbox_prune()
