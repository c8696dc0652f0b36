"""``manage.py bench_api``: signed order entry over HTTP against the running stack.

Start the exchange first (``make run``, or ``manage.py up``) with the rate
limits raised above what the benchmark sends (``THROTTLE_RATE_ORDERS`` and
``THROTTLE_RATE_USER``, e.g. ``100000/s``), so the API is measured, not the
limiter. This command uses the same database (``EXCHANGE_DATA_DIR`` or the
configured servers) to create its traders, one funded user and API key each,
then sends signed requests from one asyncio client (``orders/loadgen.py``):

- ``--workload place`` (default): LIMIT orders around the market's price,
  about a third crossing so the matchers trade while the API is loaded,
  half of them with a ``client_order_id`` and half without;
- ``--workload cancel``: places ``--orders`` resting orders first (untimed),
  then times ``DELETE /orders/{id}`` of each;
- ``--workload cancel-all``: each trader places resting orders first
  (untimed), then times one ``DELETE /orders?market=`` per trader
  (``--traders`` requests).

Before the timed part, each trader places ``--warmup`` resting orders (untimed,
default 16): a key's first order on a web worker loads what that worker
caches for it (the key and its secret, the user's fee rates and risk limits,
the risk counters), about 12 ms of latency and 20 ms of CPU on the machine of
docs/BENCHMARKS.md. Without it, the 64 new keys of a run would queue their
cold first orders at the start of the timed part, and the percentiles would
measure that start-up (``--warmup 0`` measures it). Whatever the untimed
part set going, the timed part waits for it to be done (``stack_backlog``:
the outbox relay has published every event, and every consumer group of
every stream, the matchers' and the risk consumer's, has read and
acknowledged every entry), so that it measures its own requests and not the
tail of the set-up. A stack that does not get there within
``SETTLE_TIMEOUT_S`` is measured anyway, with a warning naming what was left.

``--rate R`` sends at R requests per second (open loop: latency counts from
when each request was due); without it, ``--connections`` connections send
as fast as they are answered (closed loop). It prints the CPU seconds each
kind of process used for the timed part (web workers, matchers,
PostgreSQL, Redis, the outbox relay, Celery, this client), per request as
well: from its first request until the stack has done the work its requests
set going (``stack_backlog`` again), so that a consumer that falls behind
during the run is charged for what it does after the last answer too (a
stack that defers work would otherwise look cheaper per order); processes
that end meanwhile count through the parent that reaped them
(``loadgen.ProcessCpu``). The last line
is ``orders_per_s=<int> p50_ms=<float> p99_ms=<float> p999_ms=<float>``:
requests answered with the workload's success status per second, and the
latency percentiles of every request. ``--timeline FILE`` also writes one
line per timed request: when it was due (seconds from the start), its
latency in milliseconds and its status, to see when the slow ones happened.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from decimal import Decimal as D
from urllib.parse import urlparse

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from exchange.apikeys.services import api_key_create
from exchange.core.redis import get_redis
from exchange.models import Market
from exchange.outbox import metrics as outbox_metrics
from matching.bench_feed import funded_traders
from orders import loadgen

ORDERS = "/api/v1/orders"
SETTLE_TIMEOUT_S = 120.0
SETTLE_POLL_S = 0.2


class Command(BaseCommand):
    help = "Benchmark signed order entry (place, cancel, cancel all) over HTTP against the running stack."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--market", default="BTC-USDT")
        parser.add_argument("--workload", choices=["place", "cancel", "cancel-all"], default="place")
        parser.add_argument("--orders", type=int, default=6000, help="Requests to time (place, cancel).")
        parser.add_argument("--rate", type=float, default=0, help="Requests per second (open loop); 0: closed loop.")
        parser.add_argument("--connections", "--clients", type=int, default=32, dest="connections")
        parser.add_argument("--traders", type=int, default=16, help="Funded users, one API key each.")
        parser.add_argument("--seed", type=int, default=1)
        parser.add_argument("--warmup", type=int, default=16,
                            help="Resting orders each trader places, untimed, before the timed part.")
        parser.add_argument("--timeline", default="",
                            help="Write each timed request's due time (s), latency (ms) and status to this file.")

    def handle(self, *args, url, market, workload, orders, rate, connections, traders, seed, warmup, timeline,
               **options):
        symbol = market.upper()
        market_row = Market.objects.select_related("base", "quote").filter(symbol=symbol).first()
        if market_row is None:
            raise CommandError(f"no market {symbol}; run the stack with its demo (make run)")
        target = urlparse(url)
        host, port = target.hostname, target.port or 80
        keys = self._traders(market_row, traders)
        mid = self._mid(host, port, symbol)
        rng = random.Random(seed)
        orders_for = _OrderMaker(market_row, mid, rng)
        if warmup:
            self._place_resting(host, port, keys, orders_for, warmup * len(keys), connections)

        if workload == "place":
            requests = [("POST", ORDERS, "", orders_for.body(crossing_share=0.33, with_client_id=i % 2 == 0))
                        for i in range(orders)]
            success = 201
        elif workload == "cancel":
            placed = self._place_resting(host, port, keys, orders_for, orders, connections)
            requests = [("DELETE", f"{ORDERS}/{order_id}", "", b"") for order_id in placed]
            success = 202
        else:
            self._place_resting(host, port, keys, orders_for, traders * 4, connections)
            requests = [("DELETE", ORDERS, f"market={symbol}", b"") for _ in keys]
            success = 202

        self._settle()
        cpu = loadgen.ProcessCpu(str(settings.DATA_DIR), backends=_backends)
        cpu.start()
        result = loadgen.run(host=host, port=port, connections=connections, requests=requests, keys=keys,
                             rate=rate or None)
        left = stack_backlog()
        answered = time.monotonic()
        self._settle()
        used = cpu.stop()
        self.stdout.write(f"work left when the last request was answered: {left or 'none'}; done "
                          f"{time.monotonic() - answered:.1f}s later (the CPU seconds below include it)")
        self._report(workload, result, used, cpu.postgres_by_client, success, rate, connections)
        if timeline:
            with open(timeline, "w") as out:
                for due_s, latency_s, status in zip(result.due_s, result.latencies_s, result.status_list):
                    out.write(f"{due_s:.4f} {latency_s * 1000:.2f} {status}\n")

    def _settle(self) -> None:
        """Wait until the stack has done what the untimed part set going (``stack_backlog``
        empty twice in a row), at most SETTLE_TIMEOUT_S."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        clean = 0
        while True:
            left = stack_backlog()
            clean = 0 if left else clean + 1
            if clean == 2:
                return
            if left and time.monotonic() > deadline:
                self.stderr.write(f"not settled after {SETTLE_TIMEOUT_S:g}s, measuring anyway: {left}")
                return
            time.sleep(SETTLE_POLL_S)

    def _traders(self, market: Market, count: int) -> list[tuple[str, str]]:
        keys = []
        for user in funded_traders(market, count, name=f"bench-api-{uuid.uuid4().hex[:8]}", base=D(10**6),
                                   quote=D(10**11)):
            key, secret = api_key_create(user=user, label="bench", permissions=["read", "trade"], ip_allowlist=[])
            keys.append((key.key_id, secret))
        return keys

    def _mid(self, host: str, port: int, symbol: str) -> D:
        import http.client

        connection = http.client.HTTPConnection(host, port, timeout=10)
        connection.request("GET", f"/api/v1/ticker/{symbol}")
        ticker = json.loads(connection.getresponse().read())
        connection.close()
        return D(ticker["last"]) if ticker.get("last") else D(65000)

    def _place_resting(self, host, port, keys, orders_for, count: int, connections: int) -> list[int]:
        """Place ``count`` orders that rest (never cross), as fast as the server takes them; their ids."""
        requests = [("POST", ORDERS, "", orders_for.body(crossing_share=0, with_client_id=False))
                    for _ in range(count)]
        result = loadgen.run(host=host, port=port, connections=connections, requests=requests, keys=keys,
                             rate=None, keep_bodies=True)
        placed = [body["id"] for body in result.bodies if body and "id" in body]
        if len(placed) < count:
            raise CommandError(f"only {len(placed)} of {count} set-up orders were placed: {dict(result.statuses)}")
        return placed

    def _report(self, workload, result: loadgen.Result, used: dict[str, float], postgres_by_client: dict[str, float],
                success: int, rate, connections):
        done = len(result.latencies_s)
        accepted = result.statuses.get(success, 0)
        mode = f"open loop at {rate:g}/s" if rate else f"closed loop, {connections} connections"
        self.stdout.write(f"{workload}: {done} requests in {result.elapsed_s:.2f}s ({mode}); "
                          f"statuses {dict(result.statuses)}")
        total = sum(used.values())
        self.stdout.write("CPU seconds during the run (per request, ms):")
        for kind in ("web", "matcher", "postgres", "redis", "relay", "celery", "client"):
            seconds = used.get(kind, 0.0)
            self.stdout.write(f"  {kind:<9} {seconds:7.2f}  ({seconds / max(done, 1) * 1000:.3f})")
            if kind == "postgres":
                for client, client_seconds in sorted(postgres_by_client.items(), key=lambda item: -item[1]):
                    if client_seconds >= 0.005:
                        self.stdout.write(f"    for {client:<26} {client_seconds:7.2f}  "
                                          f"({client_seconds / max(done, 1) * 1000:.3f})")
        self.stdout.write(f"  {'total':<9} {total:7.2f}  ({total / max(done, 1) * 1000:.3f})")
        self.stdout.write(
            f"orders_per_s={int(accepted / result.elapsed_s) if result.elapsed_s else 0} "
            f"p50_ms={result.percentile_ms(0.50):.1f} p99_ms={result.percentile_ms(0.99):.1f} "
            f"p999_ms={result.percentile_ms(0.999):.1f}")


def stack_backlog() -> dict[str, int]:
    """What the stack still has to do, by where it waits: ``outbox`` (events the relay has not
    published yet) and ``<group> on <stream>`` (entries of the stream a consumer group has not
    acknowledged, or not read yet: at least 1 then). Empty: nothing."""
    left = {}
    pending = outbox_metrics.snapshot()["backlog"]["PENDING"]
    if pending:
        left["outbox"] = pending
    client = get_redis()
    for key in client.scan_iter(_type="STREAM"):
        last = client.xinfo_stream(key)["last-generated-id"]
        for group in client.xinfo_groups(key):
            behind = group["pending"] + (group["last-delivered-id"] != last)
            if behind:
                left[f"{group['name'].decode()} on {key.decode()}"] = behind
    return left


def _backends() -> dict[int, str]:
    """PostgreSQL's backends of this database, by the application_name of their client."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pid, application_name FROM pg_stat_activity WHERE datname = current_database()")
        return {pid: name or "unnamed" for pid, name in cursor.fetchall()}


class _OrderMaker:
    """LIMIT order bodies around ``mid``: buys below and sells above it unless crossing."""

    def __init__(self, market: Market, mid: D, rng: random.Random):
        self.market, self.mid, self.rng = market, mid, rng
        # The smallest quantity (in steps) whose notional meets the market's minimum.
        self.min_steps = max(1, int(market.min_notional / (mid * market.step_size)) + 1)

    def body(self, *, crossing_share: float, with_client_id: bool) -> bytes:
        rng, market = self.rng, self.market
        side = rng.choice(["BUY", "SELL"])
        offset = D(rng.randint(1, 20)) * market.tick_size
        crossing = rng.random() < crossing_share
        below = (side == "BUY") != crossing
        price = self.mid - offset if below else self.mid + offset
        order = {"market": market.symbol, "side": side, "type": "LIMIT", "price": str(price),
                 "quantity": str(market.step_size * self.min_steps * rng.randint(1, 5))}
        if with_client_id:
            order["client_order_id"] = uuid.uuid4().hex
        return json.dumps(order).encode()
