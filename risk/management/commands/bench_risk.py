"""``manage.py bench_risk``: what the pre-trade risk check adds to an order.

Setup (not timed): a fresh market (``R...-BUSD``) with every limit set at its
scope (generous, so that every check runs and passes), ``--users`` users, and
their counters built from the database once (a warm-up call each).

Timed, ``--calls`` times round-robin over the users, exactly what the order
path does per order: ``pre_trade_plan`` (restrictions and static limits from
the per-process caches, the script's arguments), the ONE Lua call that
checks and reserves the counter limits (EVALSHA against the real Redis,
standalone here: on the order path it rides in the pipeline the order sends
anyway), and ``plan.verdict``.

Reported: p50/p99 of the CPU part (plan + verdict, in this process), of the
Lua call's round trip, and of the three together; the script's own time in
Redis per call (INFO commandstats), next to a script that does nothing (the
scale on a shared machine); CPU per call of this process and of the Redis
server. Then the order path's first Redis round trip (orders/fastpath.py:
the change token, the admission script, the market's heartbeat) timed with
and without the risk check in it (plan, script, verdict; alternately,
``--calls``/2 each): the difference is what the check adds to an order.
The last line is machine-readable:
``check_p99_us=<cpu part p99> lua_server_us=<mean> total_p99_us=<all three, p99>``.
What the order path adds is the CPU part plus the script's time in Redis
(no round trip of its own).
"""

from __future__ import annotations

import gc
import os
import resource
import time
from decimal import Decimal as D

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from exchange.core.redis import get_redis
from matching.bench_feed import bench_market
from orders.rules import Reference
from risk import counters, limits as limits_module
from risk.models import Scope
from risk.pretrade import pre_trade_plan
from risk.services import risk_limit_set


def _percentile(sorted_values: list[int], share: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * share))] / 1000


def _evalsha_stats(client) -> tuple[int, int]:
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    return int(stats.get("calls", 0)), int(stats.get("usec", 0))


def _redis_cpu(client) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


class Command(BaseCommand):
    help = "Benchmark the pre-trade risk check: plan + one Lua call + verdict, against the real Redis."

    def add_arguments(self, parser):
        parser.add_argument("--calls", type=int, default=100_000)
        parser.add_argument("--users", type=int, default=100)

    def handle(self, *args, calls: int, users: int, **options):
        market = bench_market("R")
        User = get_user_model()
        people = [User.objects.create(username=f"bench-{market.symbol}-{index}") for index in range(users)]
        risk_limit_set(scope=Scope.MARKET, market=market, values={
            "max_open_orders": 10**9, "max_order_quantity": "1000", "max_order_notional": "10000000",
            "max_daily_notional": "100000000000", "max_daily_orders": 10**9, "max_position": "100000000",
            "max_orders_per_second": 10**9, "price_band": "0.5"})
        client = get_redis()
        reference = Reference(last_price=D("1000"), best_bid=D("999.99"), best_ask=D("1000.01"))
        price, quantity = D("1000.00"), D("0.0100")
        tier = {person.pk: limits_module.kyc_tier(person.pk) for person in people}

        def check(person, coid: str, now_ms: int):
            return pre_trade_plan(
                user_id=person.pk, kyc_tier=tier[person.pk], market=market, side="BUY", order_type="LIMIT",
                quantity=quantity, quote_quantity=None, price=price, notional=price * quantity, reference=reference,
                now_ms=now_ms, client_order_id=coid)

        script = counters.script(counters.RESERVE_NEW, client)
        for person in people:  # warm-up: counters rebuilt from the database, caches loaded
            counters.counters_rebuild(user_id=person.pk, client=client)
            plan = check(person, "warm-up", time.time_ns() // 1_000_000)
            plan.verdict(script(keys=plan.keys, args=plan.args, client=client)).release(client)

        cpu_part, rtt, total = [], [], []
        calls_before, usec_before = _evalsha_stats(client)
        redis_cpu_before = _redis_cpu(client)
        process_before = resource.getrusage(resource.RUSAGE_SELF)
        perf = time.perf_counter_ns
        started = perf()
        for index in range(calls):
            person = people[index % users]
            t0 = perf()
            plan = check(person, f"c{index}", time.time_ns() // 1_000_000)
            t1 = perf()
            reply = script(keys=plan.keys, args=plan.args, client=client)
            t2 = perf()
            plan.verdict(reply)
            t3 = perf()
            cpu_part.append((t1 - t0) + (t3 - t2))
            rtt.append(t2 - t1)
            total.append(t3 - t0)
        elapsed_s = (perf() - started) / 1e9
        process_after = resource.getrusage(resource.RUSAGE_SELF)
        calls_after, usec_after = _evalsha_stats(client)
        redis_cpu = _redis_cpu(client) - redis_cpu_before
        process_cpu = (process_after.ru_utime - process_before.ru_utime) + (
            process_after.ru_stime - process_before.ru_stime)
        lua_server_us = (usec_after - usec_before) / max(1, calls_after - calls_before)

        # For scale on a shared machine: what Redis spends on a script that does nothing.
        trivial = client.register_script("return 1")
        trivial(client=client)
        calls_before, usec_before = _evalsha_stats(client)
        for _ in range(min(calls, 20_000)):
            trivial(client=client)
        calls_after, usec_after = _evalsha_stats(client)
        trivial_us = (usec_after - usec_before) / max(1, calls_after - calls_before)

        # In a pipeline, as the order path's (orders/fastpath.py) first round trip: the change
        # token, the admission script (replay and rate limits) and the market's heartbeat, with
        # and without the risk script, alternately.
        from exchange.core.localcache import VERSION_KEY
        from exchange.core.throttling import ADMISSION_LUA, Admission, request_scopes
        from matching import stream

        admission_sha = client.script_load(ADMISSION_LUA)
        heartbeat = stream.heartbeat_key(market.symbol)
        without, with_risk = [], []
        for index in range(calls // 2):
            person = people[index % users]
            for timings, risk_on in ((without, False), (with_risk, True)):
                t0 = perf()
                admission = Admission().check_failures(ip="203.0.113.9", key_id="bench").check_replay(
                    f"bench-{market.symbol}-{index}-{risk_on}", 5000)
                for scope in request_scopes(authenticated=True, view_scope="orders"):
                    admission.count(scope, f"key:bench-{person.pk}")
                keys, args = admission.keys_and_args()
                pipe = client.pipeline(transaction=False)
                pipe.get(VERSION_KEY)
                pipe.evalsha(admission_sha, len(keys), *keys, *args)
                pipe.get(heartbeat)
                if risk_on:
                    plan = check(person, f"p{index}", time.time_ns() // 1_000_000)
                    pipe.evalsha(script.sha, len(plan.keys), *plan.keys, *plan.args)
                replies = pipe.execute()
                if risk_on:
                    plan.verdict(replies[-1])
                timings.append(perf() - t0)
        without.sort()
        with_risk.sort()
        for person in people:
            client.delete(counters.counters_key(person.pk), counters.open_key(person.pk))
        for values in (cpu_part, rtt, total):
            values.sort()
        self.stdout.write(f"{calls} checks over {users} users on {market.symbol} in {elapsed_s:.1f} s "
                          f"({calls / elapsed_s:,.0f}/s; gc {'on' if gc.isenabled() else 'off'}, pid {os.getpid()})")
        self.stdout.write(f"plan + verdict (CPU, this process): p50 {_percentile(cpu_part, 0.5):.1f} us, "
                          f"p99 {_percentile(cpu_part, 0.99):.1f} us")
        self.stdout.write(f"Lua call round trip (standalone):   p50 {_percentile(rtt, 0.5):.1f} us, "
                          f"p99 {_percentile(rtt, 0.99):.1f} us; in Redis {lua_server_us:.1f} us per call "
                          f"(a script that does nothing: {trivial_us:.1f} us)")
        self.stdout.write(f"all three:                          p50 {_percentile(total, 0.5):.1f} us, "
                          f"p99 {_percentile(total, 0.99):.1f} us")
        self.stdout.write(f"CPU per check: this process {process_cpu / calls * 1e6:.1f} us, "
                          f"Redis server {redis_cpu / calls * 1e6:.1f} us")
        self.stdout.write(f"order pipeline (token, admission, heartbeat), {len(without)} each: without risk p50 "
                          f"{_percentile(without, 0.5):.1f} us p99 {_percentile(without, 0.99):.1f} us; with risk p50 "
                          f"{_percentile(with_risk, 0.5):.1f} us p99 {_percentile(with_risk, 0.99):.1f} us")
        self.stdout.write(f"check_p99_us={_percentile(cpu_part, 0.99):.1f} lua_server_us={lua_server_us:.1f} "
                          f"total_p99_us={_percentile(total, 0.99):.1f}")
