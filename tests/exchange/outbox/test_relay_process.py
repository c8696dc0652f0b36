"""``manage.py run_outbox_relay``: the relay as its own process, as ``manage.py
up`` and docker-compose run it, on the test database."""

from __future__ import annotations

import signal

from django.db import transaction

from exchange.management.commands.run_outbox_relay import APPLICATION_NAME
from exchange.outbox.bench import backend_pids
from exchange.outbox.models import Topic
from exchange.outbox.services import Event, outbox_emit_many
from tests.e2e.harness import ROOT, child_env, wait_for
from tests.exchange.outbox.conftest import published_ids, rows


def emit(key: str, n: int, start: int = 0) -> None:
    with transaction.atomic():
        outbox_emit_many([Event(Topic.ORDERS, key, "test.event", {"n": start + i}) for i in range(n)])


def spawn_relay():
    import sys

    from exchange import processes

    return processes.spawn("outbox-relay", [sys.executable, "manage.py", "run_outbox_relay", "--poll-ms", "20"],
                           env=child_env(), cwd=ROOT)


def test_two_relay_processes_publish_what_commits_once_in_order_and_stop_on_sigterm(bus, redis_app):
    """Two relay processes run at once (one works, the other waits for the lock):
    events committed in many small transactions while they poll all reach the
    bus without any wake-up from the emitters, each once and in commit order;
    SIGTERM stops both cleanly."""
    from exchange import processes

    relays = [spawn_relay(), spawn_relay()]
    try:
        # Each relay names its database session once it runs (its signal handlers installed).
        wait_for(lambda: len(backend_pids(APPLICATION_NAME)) == 2, timeout_s=60, what="both relay processes")
        emit("probe", 1)
        wait_for(lambda: len(published_ids(redis_app)) == 1, timeout_s=30, what="the probe event on the bus")
        for i in range(40):
            emit(f"K{i % 3}", 5, start=i * 5)
        wait_for(lambda: len(published_ids(redis_app)) == 201, timeout_s=30, what="every event on the bus")

        assert published_ids(redis_app) == [str(row.event_id) for row in rows()]
        for relay in relays:
            relay.popen.send_signal(signal.SIGTERM)
        assert [relay.popen.wait(15) for relay in relays] == [0, 0]
    finally:
        processes.stop(relays)
