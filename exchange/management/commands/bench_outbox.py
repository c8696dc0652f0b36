"""``manage.py bench_outbox``: what relaying outbox events costs, and how fast they reach the bus.

Two modes (docs/BENCHMARKS.md, "Outbox relay"). Both start with ``--history``
published events in the table (100,000; about 500 bytes each), as a
production table holds days of them, so that index sizes and plans are
realistic; they are deleted at the end with the run's own.


- **drain** (default): whatever is already pending is relayed first and the
  table vacuumed (not timed). Then ``--events`` events shaped like the
  matcher's ``order.updated`` (18 fields) are written with
  ``outbox_emit_many`` in transactions of ``--emit-batch`` (``emit_per_s``).
  Timed: the relay draining them in batches of ``--batch-size``, in this
  process. Reported per event: the relay's CPU (this process), its
  PostgreSQL backend's CPU, the rest of the server's CPU meanwhile
  (autovacuum, WAL writer, checkpointer), and the CPU of a VACUUM of the
  outbox table afterwards (the clean-up the relay's writes leave behind).
  Last line: ``events_per_s=<int> emit_per_s=<int> relay_us=<f> pg_us=<f>
  pg_bg_us=<f> vacuum_us=<f> total_us=<f> bus=<redis|kafka>``.
- **load** (``--rate N``): the relay runs as it does in production, in its
  own process, while emitters in this process write about N events/s for
  ``--seconds`` (placements of 2 events and matcher batches, see
  ``exchange.outbox.bench.LoadWriter``) and a reader measures the time from
  each event's commit to its arrival on the bus. Last line:
  ``rate=<int> latency_p50_ms=<f> latency_p99_ms=<f> latency_max_ms=<f>
  relay_us=<f> relay_pg_us=<f> pg_us=<f> bus=redis`` (per event: the relay
  process's CPU, its PostgreSQL backend's, and the whole server's, the
  emitters' writes included).

The Redis-stream bus by default, with streams under a ``bench:`` prefix that
are deleted afterwards; ``--kafka host:port`` relays to that broker instead
(drain mode).
"""

from __future__ import annotations

import os
import sys
import time
from decimal import Decimal as D

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction
from django.utils import timezone

from exchange import processes
from exchange.core.redis import get_redis
from exchange.management.commands.run_outbox_relay import APPLICATION_NAME
from exchange.outbox import bench
from exchange.outbox.bus import KafkaBus, RedisStreamBus, stream_name
from exchange.outbox.models import OutboxEvent, Topic
from exchange.outbox.relay import outbox_relay
from exchange.outbox.services import Event, outbox_emit_many

BENCH_PREFIX = "bench:bus:"


def _payload(i: int) -> dict:
    return {
        "order_id": 10_000_000 + i, "client_order_id": f"bench-{i:012d}", "user_id": 1000 + i % 200,
        "market": "BENCH-USDT", "side": "BUY" if i % 2 else "SELL", "type": "LIMIT", "status": "PARTIALLY_FILLED",
        "status_reason": "", "price": D("65000.12"), "stop_price": None, "quantity": D("0.015"),
        "quote_quantity": None, "filled_quantity": D("0.005"), "filled_notional": D("325.0006"),
        "average_price": D("65000.12"), "fee_total": D("0.0000075"), "accepted_sequence": i,
        "last_sequence": i + 1, "updated_at": timezone.now(),
    }


def _per_event_us(seconds: float, events: int) -> float:
    return seconds / max(events, 1) * 1e6


class Command(BaseCommand):
    help = "Benchmark the outbox relay: events/s, CPU per event (relay and PostgreSQL), commit -> bus latency."

    def add_arguments(self, parser):
        parser.add_argument("--events", type=int, default=50_000, help="drain mode: events written, then relayed")
        parser.add_argument("--batch-size", type=int, default=500, help="relay batch size")
        parser.add_argument("--emit-batch", type=int, default=1000, help="drain mode: events per writing transaction")
        parser.add_argument("--keys", type=int, default=20, help="distinct keys (markets) the events spread over")
        parser.add_argument("--history", type=int, default=100_000,
                            help="published events already in the table, as in production (deleted afterwards)")
        parser.add_argument("--kafka", default="", help="drain mode: bootstrap servers; default: the Redis-stream bus")
        parser.add_argument("--rate", type=float, default=0, help="load mode: events/s to write while the relay runs")
        parser.add_argument("--seconds", type=float, default=20, help="load mode: how long to write")
        parser.add_argument("--placement-share", type=float, default=0.375,
                            help="load mode: share of events written by 2-event placements (the rest: matcher batches)")
        parser.add_argument("--matcher-batch", type=int, default=500, help="load mode: events per matcher transaction")

    def handle(self, *args, **options):
        postmaster = bench.postgres_server_pid()
        if postmaster is None:
            self.stderr.write("PostgreSQL does not run on this machine: its CPU time is not measured")
        prefix = settings.OUTBOX_REDIS_STREAM_PREFIX
        settings.OUTBOX_REDIS_STREAM_PREFIX = BENCH_PREFIX
        first_id = self._first_new_id()
        try:
            self._history(options["history"], options["keys"])
            if options["rate"]:
                if options["kafka"]:
                    raise CommandError("--kafka is for the drain mode")
                self._load(postmaster, **options)
            else:
                self._drain(postmaster, **options)
        finally:
            get_redis().delete(*[stream_name(topic) for topic in Topic.values])
            settings.OUTBOX_REDIS_STREAM_PREFIX = prefix
            OutboxEvent.objects.filter(id__gte=first_id).delete()

    @staticmethod
    def _first_new_id() -> int:
        last = OutboxEvent.objects.order_by("-id").values_list("id", flat=True).first()
        return (last or 0) + 1

    @staticmethod
    def _history(count: int, keys: int) -> None:
        """Published events of the past (transaction id 1: before every snapshot), so that the
        table and its indexes have the size they have in production and the plans face them."""
        with connection.cursor() as cursor:
            cursor.execute(
                f"""INSERT INTO {bench.TABLE} (topic, key, event_type, payload, txid, created_at)
                    SELECT 'order.events', 'BENCH' || mod(g, %s) || '-USDT', 'order.updated',
                           json_build_object('order_id', g, 'status', 'FILLED', 'padding', repeat('x', 380)), '1',
                           now() - interval '1 hour'
                    FROM generate_series(1, %s) AS g""",
                [keys, count],
            )

    def _settle(self, bus) -> None:
        """Relay what is already pending and vacuum the table, so the run measures only its own rows."""
        relayed = outbox_relay(bus=bus, batch_size=2000).published
        if relayed:
            self.stdout.write(f"setup: relayed {relayed} events already pending (not timed)")
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM {bench.TABLE}")

    def _drain(self, postmaster, *, events, batch_size, emit_batch, keys, kafka, **options):
        bus = KafkaBus(kafka) if kafka else RedisStreamBus()
        try:
            self._settle(bus)
            started = time.perf_counter()
            for start in range(0, events, emit_batch):
                with transaction.atomic():
                    outbox_emit_many([
                        Event(Topic.ORDERS, f"BENCH{i % keys}-USDT", "order.updated", _payload(i), sequence=i + 1)
                        for i in range(start, min(events, start + emit_batch))
                    ])
            emit_s = time.perf_counter() - started

            backend = bench.backend_pid()
            clock = bench.CpuClock(
                relay=time.process_time,
                backend=lambda: bench.process_cpu_s(backend),
                server=postmaster and (lambda: bench.server_cpu_s(postmaster)),
            ).start()
            started = time.perf_counter()
            result = outbox_relay(bus=bus, batch_size=batch_size)
            relay_s = time.perf_counter() - started
            spent = clock.stop()

            vacuum = bench.CpuClock(server=postmaster and (lambda: bench.server_cpu_s(postmaster))).start()
            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM {bench.TABLE}")
            vacuum_spent = vacuum.stop()
        finally:
            bus.close()
        published = result.published
        relay_us = _per_event_us(spent["relay"], published)
        pg_us = _per_event_us(spent["backend"], published)
        pg_bg_us = _per_event_us(max(0.0, spent.get("server", spent["backend"]) - spent["backend"]), published)
        vacuum_us = _per_event_us(vacuum_spent.get("server", 0.0), published)
        self.stdout.write(
            f"{events} events written in {emit_s:.2f}s; {published} relayed in {relay_s:.2f}s "
            f"({result.batches} batches of {batch_size}, {result.refused} refused, {result.unconfirmed} unconfirmed)")
        self.stdout.write(
            f"CPU per event: relay {relay_us:.1f} us, its PostgreSQL backend {pg_us:.1f} us, "
            f"the rest of the server meanwhile {pg_bg_us:.1f} us, VACUUM afterwards {vacuum_us:.1f} us")
        self.stdout.write(
            f"events_per_s={int(published / relay_s)} emit_per_s={int(events / emit_s)} relay_us={relay_us:.1f} "
            f"pg_us={pg_us:.1f} pg_bg_us={pg_bg_us:.1f} vacuum_us={vacuum_us:.1f} "
            f"total_us={relay_us + pg_us + pg_bg_us + vacuum_us:.1f} bus={bus.name}")

    def _load(self, postmaster, *, rate, seconds, placement_share, matcher_batch, keys, **options):
        self._settle(RedisStreamBus())
        client = get_redis()
        client.delete(*[stream_name(topic) for topic in Topic.values])
        writer = bench.LoadWriter(rate=rate, seconds=seconds, placement_share=placement_share,
                                  matcher_batch=matcher_batch, keys=keys)
        reader = bench.LatencyReader(client, [stream_name(topic) for topic in Topic.values], writer.commits)
        relay = processes.spawn("outbox-relay", self._relay_argv(),
                                env={**os.environ, "OUTBOX_REDIS_STREAM_PREFIX": BENCH_PREFIX})
        try:
            self._wait_for_relay(client)
            reader.start()
            relay_backends = bench.backend_pids(APPLICATION_NAME)
            clock = bench.CpuClock(
                relay=lambda: bench.process_cpu_s(relay.pid),
                relay_backend=postmaster and (lambda: bench.processes_cpu_s(relay_backends)),
                server=postmaster and (lambda: bench.server_cpu_s(postmaster)),
                writers=time.process_time,
            ).start()
            started = time.perf_counter()
            threads = writer.threads()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            written_s = time.perf_counter() - started
            deadline = time.monotonic() + 120
            while len(reader.latencies_ms) + len(reader._unmatched) < writer.events and time.monotonic() < deadline:
                time.sleep(0.05)
            drained_s = time.perf_counter() - started
            spent = clock.stop()
            reader.stop()
        finally:
            processes.stop([relay])
        latencies = reader.latencies_ms
        missing = writer.events - len(latencies)
        relay_us = _per_event_us(spent["relay"], writer.events)
        relay_pg_us = _per_event_us(spent.get("relay_backend", 0.0), writer.events)
        pg_us = _per_event_us(spent.get("server", 0.0), writer.events)
        p50, p99, p999 = (bench.percentile(latencies, f) for f in (0.5, 0.99, 0.999))
        self.stdout.write(
            f"{writer.events} events written in {written_s:.1f}s ({writer.events / written_s:.0f}/s offered "
            f"{rate:.0f}/s), all on the bus after {drained_s:.1f}s, {missing} missing; load average "
            f"{os.getloadavg()[0]:.2f}")
        self.stdout.write(
            f"commit -> bus latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms, p99.9 {p999:.1f} ms, "
            f"max {max(latencies, default=float('nan')):.1f} ms")
        self.stdout.write(
            f"CPU per event: relay process {relay_us:.1f} us, its PostgreSQL backend {relay_pg_us:.1f} us, "
            f"the whole PostgreSQL server (the writes included) {pg_us:.1f} us, "
            f"emitters and reader (this process) {_per_event_us(spent['writers'], writer.events):.1f} us")
        self.stdout.write(
            f"rate={int(writer.events / written_s)} latency_p50_ms={p50:.1f} latency_p99_ms={p99:.1f} "
            f"latency_max_ms={max(latencies, default=float('nan')):.1f} relay_us={relay_us:.1f} "
            f"relay_pg_us={relay_pg_us:.1f} pg_us={pg_us:.1f} bus=redis")

    @staticmethod
    def _relay_argv() -> list[str]:
        """The relay as production runs it (``manage.py up``, docker-compose)."""
        return [sys.executable, str(settings.BASE_DIR / "manage.py"), "run_outbox_relay"]

    @staticmethod
    def _wait_for_relay(client, timeout_s: float = 60) -> None:
        """Until an event committed now reaches the bus: the relay process is up."""
        stream = stream_name(Topic.AUDIT)
        before = client.xlen(stream)
        with transaction.atomic():
            outbox_emit_many([Event(Topic.AUDIT, "system", "bench.probe", {})])
        deadline = time.monotonic() + timeout_s
        while client.xlen(stream) == before:
            if time.monotonic() > deadline:
                raise CommandError("the relay process published nothing within a minute")
            time.sleep(0.1)
