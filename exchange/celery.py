"""The Celery application: queues default, risk and outbox on the Redis broker."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings.base")

app = Celery("exchange")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _database_connections_released(sender=None, **_kwargs) -> None:
    """Around each task a worker runs, what Django does around a request: a connection that is
    broken, or done with (CONN_MAX_AGE), is closed, and with the pool that returns it to the
    pool. The pool itself lives as long as the worker's child (settings: CELERY_DB_REUSE_MAX).
    A task run eagerly runs inside its caller, whose connection is the caller's business."""
    if sender is None or getattr(sender.request, "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
