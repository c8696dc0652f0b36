"""manage.py bench_outbox runs (tiny sizes here), relays what it wrote, cleans up, and ends with the line BENCHMARKS.md quotes."""

import re
from io import StringIO

from django.core.management import call_command
from django.db import transaction

from exchange.outbox.models import OutboxEvent, Topic
from exchange.outbox.services import outbox_emit


def test_bench_outbox_relays_every_event_it_writes(bus, redis_app, settings):
    with transaction.atomic():  # already pending before the run: relayed first, not counted
        outbox_emit(topic=Topic.ORDERS, key="X", event_type="x", payload={})
    out = StringIO()

    call_command("bench_outbox", events=250, batch_size=100, emit_batch=100, stdout=out)

    last = out.getvalue().strip().splitlines()[-1]
    assert re.fullmatch(r"events_per_s=\d+ emit_per_s=\d+ relay_us=[\d.]+ pg_us=[\d.]+ pg_bg_us=[\d.]+ "
                        r"vacuum_us=[\d.]+ total_us=[\d.]+ bus=redis", last), last
    assert "250 relayed" in out.getvalue()
    assert list(OutboxEvent.objects.values_list("status", flat=True)) == ["PUBLISHED"]  # the run's rows are deleted
    assert not redis_app.keys("bench:*")
    assert settings.OUTBOX_REDIS_STREAM_PREFIX == "bus:" and settings.OUTBOX_KICK_ENABLED
