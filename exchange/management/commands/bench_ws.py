"""``manage.py bench_ws``: order accepted -> event received over WebSocket.

Setup (not timed): a fresh market, two funded traders with API keys; the
engine benchmark's standard mix of commands (``matching.bench.generate``:
70% limits, a third of them crossing, 20% cancels, 10% market orders)
between the two traders; one web worker and one matcher process for the
market, started by this command; a client process
(``exchange.live.bench_client``) with one authenticated connection per
trader subscribed to ``user.orders`` and ``--subscribers`` anonymous
connections subscribed to the market's ``orderbook`` and ``trades``.

Measured: orders are accepted at a steady ``--rate`` as the API accepts them
(order row PENDING with its funds held, committed, then XADDed to the
market's stream), in small groups every few milliseconds. The accept time
of an order is taken after its commit, just before the XADD. Latency of an
order = first ``user.orders`` message about it received by its trader's
client - its accept time. Idle subscribers record the lag of every
orderbook update (receive time - the update's event timestamp, which is the
order's creation time). The last line is ``p50_ms=.. p99_ms=.. book_p50_ms=..
book_p99_ms=.. delivered=..``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from exchange import processes
from exchange.apikeys.services import api_key_create
from exchange.core.redis import get_redis
from matching import stream
from matching.bench import generate
from matching.bench_feed import accept, bench_market, funded_traders
from wallet.fees import fee_rates_for

ROOT = Path(__file__).resolve().parents[3]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _percentile(values, q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Command(BaseCommand):
    help = "Benchmark order accepted -> WebSocket event latency at a steady rate, with N subscribers."

    def add_arguments(self, parser):
        parser.add_argument("--rate", type=int, default=1000, help="orders accepted per second")
        parser.add_argument("--seconds", type=float, default=10.0)
        parser.add_argument("--subscribers", type=int, default=0, help="idle orderbook+trades subscribers")
        parser.add_argument("--group-ms", type=int, default=20, help="orders are accepted in groups this often")
        parser.add_argument("--seed", type=int, default=1)

    def handle(self, *args, rate: int, seconds: float, subscribers: int, group_ms: int, seed: int, **options):
        market = bench_market("W")
        traders = funded_traders(market, 2, name=f"bench-ws-{market.symbol}")
        keys = [api_key_create(user=user, label="bench-ws", permissions=["read"], ip_allowlist=[]) for user in traders]
        count = int(rate * seconds)
        commands, stats, _ = generate(seed, count, (70, 20, 10), 5.5, len(traders))
        port = _free_port()
        env = dict(os.environ, DATABASE_URL=settings.DATABASE_URL, REDIS_URL=settings.REDIS_URL,
                   DJANGO_SETTINGS_MODULE="exchange.settings.base", LOG_LEVEL="WARNING", PYTHONUNBUFFERED="1")
        children = [
            processes.spawn("web", [sys.executable, "-m", "exchange.server", "--host", "127.0.0.1", "--port", str(port),
                                    "--workers", "1"], env=env, cwd=ROOT,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            processes.spawn("matcher", [sys.executable, "manage.py", "run_matcher", market.symbol, "--block-ms", "5"],
                            env=env, cwd=ROOT, stdout=subprocess.DEVNULL),
        ]
        workdir = Path(tempfile.mkdtemp(prefix="bench-ws-"))
        try:
            self._wait_ready(market.symbol, port)
            config = {"url": f"ws://127.0.0.1:{port}/ws/", "symbol": market.symbol, "idle": subscribers,
                      "traders": [[key.key_id, secret] for key, secret in keys]}
            (workdir / "config.json").write_text(json.dumps(config))
            client = subprocess.Popen(
                [sys.executable, "-m", "exchange.live.bench_client", str(workdir / "config.json"),
                 str(workdir / "out.json")], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, env=env, text=True)
            line = client.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"bench client failed: {line!r}")
            self.stdout.write(f"{subscribers} subscribers connected; accepting {count} orders at {rate}/s")
            accepted, behind_ms = self._inject(market, traders, commands, rate, group_ms)
            client.stdin.close()
            client.wait(timeout=120)
            result = json.loads((workdir / "out.json").read_text())
        finally:
            processes.stop(children)
        from django.utils.dateparse import parse_datetime

        received = {int(order_id): row[0] for order_id, row in result["orders"].items()}
        written = {int(order_id): parse_datetime(row[1]).timestamp() for order_id, row in result["orders"].items()}
        # When the web process handled the message (the frame's timestamp, ms).
        handled = {int(order_id): row[2] / 1000 for order_id, row in result["orders"].items()}
        latencies = [(received[order_id] - at) * 1000 for order_id, at in accepted.items() if order_id in received]
        to_matcher = [(written[order_id] - at) * 1000 for order_id, at in accepted.items() if order_id in written]
        to_client = [(received[order_id] - written[order_id]) * 1000 for order_id in received]
        to_web = [(handled[order_id] - written[order_id]) * 1000 for order_id in received]
        web_to_client = [(received[order_id] - handled[order_id]) * 1000 for order_id in received]
        book_lags = [lag for lags in result["book_lag_ms"] for lag in lags]
        delivered = len(latencies) / len(accepted) if accepted else 0.0
        self.stdout.write(
            f"{len(accepted)} orders accepted (injector behind schedule at most {behind_ms:.0f} ms); "
            f"{len(latencies)} seen on user.orders; crossing limits {stats['crossing_limit_share']:.0%}; "
            f"book updates received by subscribers: {len(book_lags)}; server resyncs: {sum(result['resyncs'])}")
        self.stdout.write(
            f"p50_ms={_percentile(latencies, 0.5):.1f} p99_ms={_percentile(latencies, 0.99):.1f} "
            f"book_p50_ms={_percentile(book_lags, 0.5):.1f} book_p99_ms={_percentile(book_lags, 0.99):.1f} "
            f"delivered={delivered:.3f}")
        self.stdout.write(
            f"split: accepted -> matcher writes the batch p50 {_percentile(to_matcher, 0.5):.1f} ms "
            f"p99 {_percentile(to_matcher, 0.99):.1f} ms; batch written -> client p50 "
            f"{_percentile(to_client, 0.5):.1f} ms p99 {_percentile(to_client, 0.99):.1f} ms (written -> web process "
            f"handles it p50 {_percentile(to_web, 0.5):.1f} ms p99 {_percentile(to_web, 0.99):.1f} ms; web process -> "
            f"client p50 {_percentile(web_to_client, 0.5):.1f} ms p99 {_percentile(web_to_client, 0.99):.1f} ms)")

    # --------------------------------------------------------------- setup

    def _wait_ready(self, symbol: str, port: int) -> None:
        import urllib.request

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1):
                    if stream.matcher_alive(symbol):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the web server or the matcher did not start")

    # -------------------------------------------------------------- inject

    def _inject(self, market, traders, commands, rate: int, group_ms: int) -> tuple[dict[int, float], float]:
        """Accept ``commands`` at ``rate`` per second; {order id: accept time}."""
        redis = get_redis()
        key = stream.stream_key(market.symbol)
        rates = fee_rates_for(user=traders[0], market=market)
        per_group = max(1, round(rate * group_ms / 1000))
        db_id: dict[int, int] = {}
        accepted: dict[int, float] = {}
        started = time.monotonic()
        behind_ms = 0.0
        for group_index, start in enumerate(range(0, len(commands), per_group)):
            due = started + group_index * per_group / rate
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            else:
                behind_ms = max(behind_ms, -wait * 1000)
            new_orders, entries = accept(commands[start:start + per_group], market=market, traders=traders,
                                         rates=rates, db_id=db_id, durable=False)
            now = time.time()
            for order in new_orders:
                accepted[order.pk] = now
            pipe = redis.pipeline(transaction=False)
            for fields in entries:
                pipe.xadd(key, fields)
            pipe.execute()
        return accepted, behind_ms
