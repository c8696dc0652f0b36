"""manage.py bench_audit_export: the audit trail at volume, and an export's memory.

Seeds ``--rows`` audit rows (one INSERT ... SELECT, realistic sizes: user
agent, request id, before/after of ~150 bytes), then measures, in order:

1. chaining them (``audit_chain``: hashing, links, audit.logs outbox rows);
2. ``audit_verify`` over the whole chain;
3. exporting all of them as CSV, then as JSON Lines, through the ASGI
   application the web server runs (``exchange.asgi.application``): GET
   /api/v1/compliance/audit-logs as a signed-in Compliance user, the body
   discarded as it arrives.

For each step: wall time, rows/s, and CPU seconds of this process and of
the PostgreSQL server (its postmaster's children, read from /proc, when the
server runs on this machine). During each export a thread samples this
process's RSS every 20 ms: ``rss_peak_mb`` against ``rss_before_mb`` is
the memory the export needed. Flat memory means the growth does not depend
on the number of rows (compare ``--rows 100000`` with the default).

Runs in a throwaway database (``bench_audit_export``, created, migrated and
dropped), because audit rows cannot be deleted; ``--here`` uses the current
database (tests). The last line is ``rows=... export_csv_rows_per_s=...
export_rss_growth_mb=...``.
"""

from __future__ import annotations

import asyncio
import os
import platform
import threading
import time
from pathlib import Path

import psutil
from django.core.management.base import BaseCommand
from django.db import connection

_SEED = """
    INSERT INTO exchange_auditlog (created_at, action, object_type, object_id, market, actor_user_id, actor_api_key_id,
                                   subject_user_id, ip, user_agent, request_id, before, after)
    SELECT now() - (%(rows)s - n) * interval '1 millisecond',
           (ARRAY['PLACE_ORDER', 'CANCEL_ORDER', 'WITHDRAWAL_REQUEST', 'API_KEY_CREATE', 'LOGIN'])[1 + n %% 5],
           'orders.order', n::text, 'BTC-USDT', 1 + n %% 1000, 1 + n %% 3000, 1 + n %% 1000,
           ('10.' || (n %% 250) || '.' || (n / 250 %% 250) || '.7')::inet,
           'Mozilla/5.0 (X11; Linux x86_64) bench-client/' || (n %% 97),
           md5(n::text),
           jsonb_build_object('status', 'NEW', 'price', '65123.45', 'quantity', '0.0125'),
           jsonb_build_object('status', 'CANCELED', 'price', '65123.45', 'quantity', '0.0125',
                              'filled_quantity', '0', 'reason', 'user request')
    FROM generate_series(1, %(rows)s) n
"""


class _Sampler:
    """Samples this process's RSS in a thread; ``peak`` in bytes."""

    def __init__(self, interval_s: float = 0.02):
        self.process = psutil.Process()
        self.interval_s = interval_s
        self.peak = self.process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def _server_cpu_s() -> float | None:
    """CPU seconds used so far by the database server's processes (its postmaster's children)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW data_directory")
            data_directory = cursor.fetchone()[0]
        pid = int(Path(data_directory, "postmaster.pid").read_text().split()[0])
        postmaster = psutil.Process(pid)
        total = 0.0
        for process in [postmaster, *postmaster.children(recursive=True)]:
            try:
                times = process.cpu_times()
                total += times.user + times.system
            except psutil.NoSuchProcess:
                continue
        return total
    except (OSError, ValueError, psutil.Error):
        return None


class _Step:
    """Wall time and CPU (this process, the database server) of one step."""

    def __enter__(self):
        self.process = psutil.Process()
        self.cpu = self.process.cpu_times()
        self.server = _server_cpu_s()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall_s = time.perf_counter() - self.started
        cpu = self.process.cpu_times()
        self.cpu_s = (cpu.user - self.cpu.user) + (cpu.system - self.cpu.system)
        server = _server_cpu_s()
        self.server_cpu_s = None if server is None or self.server is None else server - self.server

    def line(self, rows: int) -> str:
        server = "n/a" if self.server_cpu_s is None else f"{self.server_cpu_s:.1f} s"
        per_row = "" if self.server_cpu_s is None else \
            f", {(self.cpu_s + self.server_cpu_s) / rows * 1e6:.1f} us CPU/row in all"
        return (f"{self.wall_s:.1f} s, {rows / self.wall_s:,.0f} rows/s; CPU: this process {self.cpu_s:.1f} s "
                f"({self.cpu_s / rows * 1e6:.1f} us/row), database server {server}{per_row}")


class Command(BaseCommand):
    help = "Benchmark the audit trail at volume: chaining, verifying, and exporting with flat memory."

    def add_arguments(self, parser):
        parser.add_argument("--rows", type=int, default=1_000_000, help="audit rows (default 1,000,000)")
        parser.add_argument("--here", action="store_true", help="use the current database, not a throwaway one")

    def handle(self, *args, **options):
        if options["here"]:
            return self._bench(options["rows"])
        creation = connection.creation
        connection.settings_dict.setdefault("TEST", {})["NAME"] = "bench_audit_export"
        original = connection.settings_dict["NAME"]
        creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        try:
            self._bench(options["rows"])
        finally:
            creation.destroy_test_db(original, verbosity=0)

    def _bench(self, rows: int) -> None:
        from exchange.audit.chain import audit_chain, audit_verify

        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
        self.stdout.write(f"machine: nproc={os.cpu_count()} python={platform.python_version()} "
                          f"postgresql={version}")
        with connection.cursor() as cursor:
            cursor.execute(_SEED, {"rows": rows})
            cursor.execute("ANALYZE exchange_auditlog")
        self.stdout.write(f"seeded {rows:,} audit rows")

        with _Step() as chained:
            count = audit_chain()
        assert count >= rows, count
        self.stdout.write(f"chain:  {chained.line(count)}")
        with _Step() as verified:
            result = audit_verify()
        assert result.ok, result.first
        self.stdout.write(f"verify: {verified.line(result.checked)}")

        cookie = self._compliance_session()
        growth = {}
        for export_format in ("csv", "jsonl"):
            connection.close()  # the export runs on the ASGI thread's own connection
            rss_before = psutil.Process().memory_info().rss
            with _Sampler() as sampler, _Step() as step:
                size, messages = asyncio.run(self._export(cookie, export_format))
            growth[export_format] = (sampler.peak - rss_before) / 2**20
            self.stdout.write(
                f"export {export_format}: {size / 2**20:,.0f} MB in {messages:,} body messages; {step.line(rows)}; "
                f"rss_before_mb={rss_before / 2**20:.0f} rss_peak_mb={sampler.peak / 2**20:.0f} "
                f"(+{growth[export_format]:.0f} MB)")
            if export_format == "csv":
                csv_rate = rows / step.wall_s
        self.stdout.write(f"rows={rows} export_csv_rows_per_s={csv_rate:.0f} "
                          f"export_rss_growth_mb={max(growth.values()):.0f}")

    def _compliance_session(self) -> str:
        """The session cookie of a Compliance member (created here), past the second factor as staff
        sessions must be (exchange.accounts.twofactor)."""
        from django.contrib.auth import get_user_model
        from django.test import Client
        from django_otp import DEVICE_ID_SESSION_KEY
        from django_otp.plugins.otp_totp.models import TOTPDevice

        from exchange.roles import COMPLIANCE, roles_sync

        user, _ = get_user_model().objects.get_or_create(username="bench-compliance", defaults={"is_staff": True})
        user.groups.add(roles_sync()[COMPLIANCE])
        device, _ = TOTPDevice.objects.get_or_create(user=user, confirmed=True, defaults={"name": "bench"})
        client = Client()
        client.force_login(user)
        session = client.session
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()
        return client.cookies["sessionid"].value

    async def _export(self, cookie: str, export_format: str) -> tuple[int, int]:
        """GET the export through the ASGI application; returns (bytes, body messages)."""
        from exchange.asgi import application

        path = "/api/v1/compliance/audit-logs"
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "",
                 "query_string": f"format={export_format}".encode(),
                 "headers": [(b"host", b"127.0.0.1"), (b"cookie", f"sessionid={cookie}".encode())],
                 "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
        state = {"bytes": 0, "messages": 0, "status": None}
        sent = asyncio.Event()

        async def receive():
            if not sent.is_set():
                sent.set()
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()

        async def send(message):
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message.get("body"):
                state["bytes"] += len(message["body"])
                state["messages"] += 1

        await application(scope, receive, send)
        assert state["status"] == 200, state
        return state["bytes"], state["messages"]
