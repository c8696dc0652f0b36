"""``manage.py bench_api``: signed order placement over HTTP against the running stack.

Start the exchange first (``make run``, or ``manage.py up``); this command
uses the same database to create its traders (one funded user and API key
per client), then ``--clients`` threads each keep one HTTP/1.1 connection to
``--url`` and place signed limit orders (a mix around a mid price, about a
third crossing, so the matchers trade while the API is loaded) until
``--orders`` have been sent. Each request is timed from send to response.

The last line is ``orders_per_s=<int> p50_ms=<float> p99_ms=<float>``: the
accepted orders (201) per second over the run, and the latency percentiles of
every request. Rate limits apply: run the stack with THROTTLE_RATE_ORDERS
above the per-client rate (e.g. 10000/s) to measure the API, not the limiter.
"""

from __future__ import annotations

import http.client
import json
import random
import statistics
import threading
import time
import uuid
from collections import Counter
from decimal import Decimal as D
from urllib.parse import urlparse

from django.core.management.base import BaseCommand, CommandError

from exchange.apikeys.services import api_key_create
from exchange.apikeys.signing import signed_headers
from exchange.models import Market
from matching.bench_feed import funded_traders


class Command(BaseCommand):
    help = "Benchmark signed order placement over HTTP against the running stack."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000")
        parser.add_argument("--market", default="BTC-USDT")
        parser.add_argument("--clients", type=int, default=16)
        parser.add_argument("--orders", type=int, default=6000)
        parser.add_argument("--seed", type=int, default=1)

    def handle(self, *args, url: str, market: str, clients: int, orders: int, seed: int, **options):
        symbol = market.upper()
        market_row = Market.objects.select_related("base", "quote").filter(symbol=symbol).first()
        if market_row is None:
            raise CommandError(f"no market {symbol}; run the stack with its demo (make run)")
        keys = self._traders(market_row, clients)
        mid = self._mid(url, symbol)
        # The smallest quantity (in steps) whose notional meets the market's minimum.
        min_steps = max(1, int(market_row.min_notional / (mid * market_row.step_size)) + 1)
        target = urlparse(url)
        per_client = orders // clients
        latencies: list[list[float]] = [[] for _ in range(clients)]
        statuses: list[Counter] = [Counter() for _ in range(clients)]
        start_gate = threading.Barrier(clients + 1)

        def client(index: int):
            rng = random.Random(seed * 1000 + index)
            key_id, secret = keys[index]
            connection = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=30)
            start_gate.wait()
            for _ in range(per_client):
                side = rng.choice(["BUY", "SELL"])
                offset = D(rng.randint(1, 20)) * market_row.tick_size
                crossing = rng.random() < 0.33
                price = mid + offset if (side == "BUY") == crossing else mid - offset
                if side == "SELL" and not crossing:
                    price = mid + offset
                body = json.dumps({
                    "market": symbol, "side": side, "type": "LIMIT",
                    "price": str(price), "quantity": str(market_row.step_size * min_steps * rng.randint(1, 5)),
                    "client_order_id": uuid.uuid4().hex,
                }).encode()
                headers = signed_headers(key_id, secret, "POST", "/api/v1/orders", None, body)
                headers["Content-Type"] = "application/json"
                began = time.perf_counter()
                connection.request("POST", "/api/v1/orders", body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                latencies[index].append(time.perf_counter() - began)
                statuses[index][response.status] += 1
            connection.close()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for thread in threads:
            thread.start()
        start_gate.wait()
        began = time.perf_counter()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began

        all_latencies = sorted(x for per in latencies for x in per)
        status_total = sum(statuses, Counter())
        accepted = status_total.get(201, 0)
        p50 = statistics.median(all_latencies) * 1000
        p99 = all_latencies[int(len(all_latencies) * 0.99) - 1] * 1000
        self.stdout.write(f"{len(all_latencies)} requests from {clients} clients in {elapsed:.1f}s; "
                          f"statuses {dict(status_total)}")
        self.stdout.write(f"orders_per_s={int(accepted / elapsed)} p50_ms={p50:.1f} p99_ms={p99:.1f}")

    def _traders(self, market: Market, count: int) -> list[tuple[str, str]]:
        keys = []
        for user in funded_traders(market, count, name=f"bench-api-{uuid.uuid4().hex[:8]}", base=D(10**6), quote=D(10**11)):
            key, secret = api_key_create(user=user, label="bench", permissions=["read", "trade"], ip_allowlist=[])
            keys.append((key.key_id, secret))
        return keys

    def _mid(self, url: str, symbol: str) -> D:
        target = urlparse(url)
        connection = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=10)
        connection.request("GET", f"/api/v1/ticker/{symbol}")
        ticker = json.loads(connection.getresponse().read())
        connection.close()
        return D(ticker["last"]) if ticker.get("last") else D(65000)
