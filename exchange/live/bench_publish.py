"""The matcher's publish step alone, per batch: ``python -m exchange.live.bench_publish``.

A fresh market, ``--users`` funded traders, the engine benchmark's standard
mix (``matching.bench.generate``) accepted in batches of ``--batch`` orders
and applied by an in-process ``Matcher`` (``run_once``: XREADGROUP, apply,
XACK, publish). Every trader is made "connected" by adding a channel of a
fictitious web process to their ``user.{id}`` group (and to the market's
book and trades groups), so every batch builds and sends every private
payload. Measured: the wall time of ``MarketPublisher.publish`` per batch
(the live messages: group members, private rows, payloads, the send), and
of ``Matcher._publish`` around it (plus the depth key), next to the batch's
time from reading its entries to its commit (engine, write, commit) for
scale. Prints one line: ``batches=.. publish_p50_ms=.. publish_p99_ms=..
step_p50_ms=.. step_p99_ms=.. commit_p50_ms=.. commit_p99_ms=.. orders_per_batch=..``.

Run it against the development database (``make run``'s embedded servers
or DATABASE_URL/REDIS_URL); it leaves the bench market's rows behind, as
``bench_matcher`` does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--orders", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=40, help="orders per batch (1,000/s in 40 ms batches)")
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings.base")
    import django

    django.setup()
    from exchange.core.redis import get_redis
    from exchange.live import protocol
    from exchange.live.fanout import group_sender
    from matching import stream
    from matching.bench import generate
    from matching.bench_feed import accept, bench_market, funded_traders
    from matching.worker.matcher import Matcher
    from wallet.fees import fee_rates_for

    market = bench_market("P")
    traders = funded_traders(market, args.users, name=f"bench-pub-{market.symbol}")
    commands, _, _ = generate(args.seed, args.orders, (70, 20, 10), 5.5, len(traders))
    sender = group_sender()
    now = int(time.time())
    fake_channel = "specific.benchpublish!fake"  # a web process that never reads: its key fills to capacity
    groups = [protocol.book_group(market.symbol), protocol.trades_group(market.symbol)]
    groups += [protocol.user_group(user.pk) for user in traders]
    for group in groups:
        sender.redis.zadd(sender.layer._group_key(group), {fake_channel: now})

    matcher = Matcher(market.symbol, batch_size=max(500, args.batch), block_ms=1)
    matcher.start()
    publish_ms, step_ms = [], []
    live_publish, step_publish = matcher.live.publish, matcher._publish

    def timed_live(*a, **k):
        started = time.perf_counter()
        live_publish(*a, **k)
        publish_ms.append((time.perf_counter() - started) * 1000)

    def timed_step(result):
        started = time.perf_counter()
        step_publish(result)
        if result is not None:
            step_ms.append((time.perf_counter() - started) * 1000)

    matcher.live.publish = timed_live
    matcher._publish = timed_step
    redis = get_redis()
    key = stream.stream_key(market.symbol)
    rates = fee_rates_for(user=traders[0], market=market)
    db_id: dict[int, int] = {}
    try:
        for start in range(0, len(commands), args.batch):
            _, entries = accept(commands[start:start + args.batch], market=market, traders=traders, rates=rates,
                                db_id=db_id, durable=False)
            pipe = redis.pipeline(transaction=False)
            for fields in entries:
                pipe.xadd(key, fields)
            pipe.execute()
            while matcher.run_once():
                pass
            matcher.land()
    finally:
        matcher.stop()
        for group in groups:
            sender.redis.delete(sender.layer._group_key(group))
        sender.redis.delete(sender.layer.prefix + "specific.benchpublish!")

    commit_ms = [seconds * 1000 for seconds in matcher.batch_latencies]

    def pct(values, q):
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    print(f"batches={len(publish_ms)} publish_p50_ms={pct(publish_ms, 0.5):.2f} "
          f"publish_p99_ms={pct(publish_ms, 0.99):.2f} publish_mean_ms={statistics.fmean(publish_ms):.2f} "
          f"step_p50_ms={pct(step_ms, 0.5):.2f} step_p99_ms={pct(step_ms, 0.99):.2f} "
          f"commit_p50_ms={pct(commit_ms, 0.5):.2f} commit_p99_ms={pct(commit_ms, 0.99):.2f} "
          f"orders_per_batch={args.batch}")


if __name__ == "__main__":
    main()
