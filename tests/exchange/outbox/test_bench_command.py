"""manage.py bench_outbox runs (tiny sizes here) in both modes, relays what it
wrote, cleans up, and ends with the line BENCHMARKS.md quotes."""

import re
from io import StringIO

from django.core.management import call_command
from django.db import transaction

from exchange.outbox.models import OutboxEvent, Topic
from exchange.outbox.relay import outbox_pending
from exchange.outbox.services import outbox_emit
from tests.e2e.harness import child_env


def test_bench_outbox_drain_relays_every_event_it_writes(bus, redis_app, settings):
    with transaction.atomic():  # already pending before the run: relayed first, not counted
        outbox_emit(topic=Topic.ORDERS, key="X", event_type="x", payload={})
    out = StringIO()

    call_command("bench_outbox", events=250, batch_size=100, emit_batch=100, history=1000, stdout=out)

    last = out.getvalue().strip().splitlines()[-1]
    assert re.fullmatch(r"events_per_s=\d+ emit_per_s=\d+ relay_us=[\d.]+ pg_us=[\d.]+ pg_bg_us=[\d.]+ "
                        r"vacuum_us=[\d.]+ total_us=[\d.]+ bus=redis", last), last
    assert "250 relayed" in out.getvalue()
    assert OutboxEvent.objects.count() == 1 and outbox_pending() == (False, None)  # the run's rows are deleted
    assert not redis_app.keys("bench:*")
    assert settings.OUTBOX_REDIS_STREAM_PREFIX == "bus:"


def test_bench_outbox_load_runs_the_relay_process_and_measures_latency(bus, redis_app, monkeypatch):
    """The load mode starts the real relay process (on the test database here),
    writes placements and matcher batches at a rate, and every event arrives."""
    monkeypatch.setenv("DATABASE_URL", child_env()["DATABASE_URL"])
    out = StringIO()

    call_command("bench_outbox", rate=400, seconds=1, matcher_batch=50, history=1000, stdout=out)

    text = out.getvalue()
    assert re.search(r"\b0 missing\b", text), text
    last = text.strip().splitlines()[-1]
    assert re.fullmatch(r"rate=\d+ latency_p50_ms=[\d.]+ latency_p99_ms=[\d.]+ latency_max_ms=[\d.]+ "
                        r"relay_us=[\d.]+ relay_pg_us=[\d.]+ pg_us=[\d.]+ bus=redis", last), last
    assert OutboxEvent.objects.count() == 0 and not redis_app.keys("bench:*")
