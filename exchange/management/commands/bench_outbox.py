"""``manage.py bench_outbox``: outbox rows written per second, and relayed per second.

Setup: whatever is already pending is relayed first (not timed), so the run
measures only its own rows. Then ``--events`` events shaped like the
matcher's ``order.updated`` (18 fields) are written with
``outbox_emit_many`` in transactions of ``--emit-batch`` (timed separately:
``emit_per_s``). Timed: the relay draining them in batches of
``--batch-size`` to the bus, each batch published and marked PUBLISHED in
its own transaction. The Redis-stream bus by default (streams under a
``bench:`` prefix, deleted afterwards); ``--kafka host:port`` relays to
that Kafka broker instead. The last line is
``events_per_s=<int> emit_per_s=<int> bus=<redis|kafka>``.
"""

from __future__ import annotations

import time
from decimal import Decimal as D

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from exchange.core.redis import get_redis
from exchange.outbox.bus import KafkaBus, RedisStreamBus
from exchange.outbox.models import OutboxEvent, Topic
from exchange.outbox.relay import outbox_relay
from exchange.outbox.services import Event, outbox_emit_many


def _payload(i: int) -> dict:
    return {
        "order_id": 10_000_000 + i, "client_order_id": f"bench-{i:012d}", "user_id": 1000 + i % 200,
        "market": "BENCH-USDT", "side": "BUY" if i % 2 else "SELL", "type": "LIMIT", "status": "PARTIALLY_FILLED",
        "status_reason": "", "price": D("65000.12"), "stop_price": None, "quantity": D("0.015"),
        "quote_quantity": None, "filled_quantity": D("0.005"), "filled_notional": D("325.0006"),
        "average_price": D("65000.12"), "fee_total": D("0.0000075"), "accepted_sequence": i,
        "last_sequence": i + 1, "updated_at": timezone.now(),
    }


class Command(BaseCommand):
    help = "Benchmark the outbox: rows written and rows relayed to the bus per second."

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, default=50_000)
        parser.add_argument("--batch-size", type=int, default=500, help="relay batch size")
        parser.add_argument("--emit-batch", type=int, default=1000, help="events per writing transaction")
        parser.add_argument("--keys", type=int, default=20, help="distinct keys (markets) the events spread over")
        parser.add_argument("--kafka", default="", help="bootstrap servers; default: the Redis-stream bus")

    def handle(self, *args, events: int, batch_size: int, emit_batch: int, keys: int, kafka: str, **options):
        prefix, kick = settings.OUTBOX_REDIS_STREAM_PREFIX, settings.OUTBOX_KICK_ENABLED
        settings.OUTBOX_REDIS_STREAM_PREFIX = "bench:bus:"
        settings.OUTBOX_KICK_ENABLED = False  # no Celery kick per transaction: the bench relays itself
        bus = KafkaBus(kafka) if kafka else RedisStreamBus()
        try:
            backlog = OutboxEvent.objects.filter(status=OutboxEvent.Status.PENDING).count()
            if backlog:
                self.stdout.write(f"setup: relaying {backlog} events already pending (not timed) ...")
                outbox_relay(bus=bus, batch_size=2000)
            started = time.perf_counter()
            for start in range(0, events, emit_batch):
                with transaction.atomic():
                    outbox_emit_many([
                        Event(Topic.ORDERS, f"BENCH{i % keys}-USDT", "order.updated", _payload(i), sequence=i + 1)
                        for i in range(start, min(events, start + emit_batch))
                    ])
            emit_s = time.perf_counter() - started

            started = time.perf_counter()
            result = outbox_relay(bus=bus, batch_size=batch_size)
            relay_s = time.perf_counter() - started
        finally:
            bus.close()
            if not kafka:
                client = get_redis()
                client.delete(*[f"bench:bus:{topic}" for topic in Topic.values])
            settings.OUTBOX_REDIS_STREAM_PREFIX, settings.OUTBOX_KICK_ENABLED = prefix, kick
        self.stdout.write(
            f"{events} events written in {emit_s:.2f}s; {result.published} relayed in {relay_s:.2f}s "
            f"({result.batches} batches of {batch_size}, {result.failed_attempts} failed)")
        self.stdout.write(
            f"events_per_s={int(result.published / relay_s)} emit_per_s={int(events / emit_s)} bus={bus.name}")
