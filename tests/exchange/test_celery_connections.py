"""A Celery worker keeps its database pool from task to task, and gives its connection back
to the pool after each task."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from celery.fixups.django import DjangoWorkerFixup
from celery.signals import task_postrun, task_prerun
from django.db import connection

from exchange.celery import app
from risk.tasks import risk_events_consume

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_prefork_child_keeps_its_pool_between_tasks():
    """Celery's Django fixup closes a prefork child's whole pool around each task unless told
    to reuse connections: with the beat's tasks every second, that was two new PostgreSQL
    backends a second. Configured, a thousand tasks leave the pool open."""
    fixup = DjangoWorkerFixup(app)
    fixup.worker = SimpleNamespace(pool_cls="celery.concurrency.prefork:TaskPool")
    task = SimpleNamespace(request=SimpleNamespace(is_eager=False))
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    pool = connection.pool
    assert pool is not None and not pool.closed
    for _ in range(1000):
        fixup.on_task_prerun(sender=task)
        fixup.on_task_postrun(sender=task)
    assert connection.pool is pool and not pool.closed


def test_a_task_run_by_a_worker_gives_its_connection_back_to_the_pool():
    """Around a task a worker runs (here in a thread of its own, as a worker's is), the
    connection goes back to the pool, as after a Django request; a task run eagerly inside
    its caller leaves the caller's connection alone."""
    task = risk_events_consume
    seen = {}

    def worker_thread():
        task_prerun.send(sender=task, task_id="t", task=task, args=(), kwargs={})
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            seen["pid"] = cursor.fetchone()[0]
        seen["held"] = connection.connection is not None
        task_postrun.send(sender=task, task_id="t", task=task, args=(), kwargs={}, retval=None, state="SUCCESS")
        seen["after"] = connection.connection
        seen["pool_open"] = connection.pool is not None and not connection.pool.closed
        connection.close()

    thread = threading.Thread(target=worker_thread)
    thread.start()
    thread.join(30)
    assert seen["held"] and seen["after"] is None and seen["pool_open"]

    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    held = connection.connection
    task.request_stack.push(SimpleNamespace(is_eager=True, id="e"))
    try:
        task_postrun.send(sender=task, task_id="e", task=task, args=(), kwargs={}, retval=None, state="SUCCESS")
    finally:
        task.request_stack.pop()
    assert connection.connection is held
