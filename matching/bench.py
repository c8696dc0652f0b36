"""Benchmark of the matching engine core: ``python -m matching.bench``.

The standard mix (the default): 1,000,000 commands from seed 1; 70% LIMIT
GTC, 20% CANCEL of a random resting order, 10% MARKET by base quantity;
sides 50/50; quantities 1-100 lots; users 1-1,000 (so self-trade prevention,
EXPIRE_TAKER by default, fires now and then). A limit price
sits at a Gaussian distance from a mid of 100,000 ticks (sd 20 ticks, clipped
to +-50) on the passive side of the mid. The mean distance is biased by a
feedback on the generator's own count of resting orders: ``--bias`` (5.5)
ticks at the target size ``--target-resting`` (1,000), plus 10 ticks times
the relative shortfall (more passive when the book is small, more
aggressive when it is large). With a fixed bias the book has no steady state
(orders far from the mid pile up faster than random cancels remove them);
with the feedback about a third of limit orders cross and about 1,000
orders rest (both printed as a check). It is a deterministic function of the
seed.

Commands are generated first, untimed, by running them through a book (the
generator needs to know which orders rest, to cancel one of them). Each run
then replays the same commands into a fresh book twice:

1. throughput: one ``perf_counter`` around the loop ``for c in commands:
   apply(c)``, with every event built as in production;
2. latency: ``perf_counter_ns`` before and after every ``apply`` call; the
   percentiles include the timer's own cost (printed, about 0.04 us).

The garbage collector stays enabled; the command list is moved out of its
reach with ``gc.freeze()`` first (a worker never holds a million commands).
The last line is ``commands_per_s=<int> p50_us=<float> p99_us=<float>``, the
medians over the runs.
"""

import argparse
import gc
import platform
import random
import statistics
import time

from matching.engine import (
    BUY,
    MARKET,
    SELL,
    CancelOrder,
    NewOrder,
    OrderBook,
)

KIND_NAMES = ("limit resting", "limit crossing", "cancel", "market")
MID_PRICE_TICKS = 100_000
PRICE_SD_TICKS = 20
PRICE_CLIP_TICKS = 50
GAIN_TICKS = 10.0


def parse_mix(text):
    """'70/20/10' -> (70, 20, 10) percentages of limit, cancel and market."""
    parts = [int(part) for part in text.split("/")]
    if len(parts) != 3 or sum(parts) != 100 or min(parts) < 0:
        raise argparse.ArgumentTypeError("mix is LIMIT/CANCEL/MARKET percentages summing to 100")
    return tuple(parts)


def generate(seed, count, mix, bias_ticks, users, target_resting=1000, gain_ticks=GAIN_TICKS):
    """Build ``count`` commands; return them with statistics of the stream."""
    rng = random.Random(seed)
    limit_pct, cancel_pct, _ = mix
    book = OrderBook("BENCH")
    resting_ids = []  # open order ids, for a uniform random pick
    position = {}  # order_id -> index in resting_ids
    owner = {}  # order_id -> user_id, for the CANCEL command
    commands = []
    next_order_id = 1
    limits = crossed_limits = trades = 0
    resting_samples = []
    kinds = []  # per command, a key of KIND_NAMES

    def forget(order_id):
        index = position.pop(order_id, None)
        if index is not None:
            last_id = resting_ids.pop()
            if last_id != order_id:
                resting_ids[index] = last_id
                position[last_id] = index

    for i in range(count):
        roll = rng.random() * 100
        timestamp = 1_700_000_000_000_000 + i
        if limit_pct <= roll < limit_pct + cancel_pct and resting_ids:
            order_id = resting_ids[rng.randrange(len(resting_ids))]
            command = CancelOrder(order_id, owner[order_id], timestamp)
        else:
            side = BUY if rng.random() < 0.5 else SELL
            quantity_lots = rng.randint(1, 100)
            user_id = rng.randint(1, users)
            order_id = next_order_id
            next_order_id += 1
            if roll < limit_pct + cancel_pct:
                limits += 1
                # Feedback keeps the book near its target size: more passive
                # when it is small, more aggressive when it is large.
                shift_ticks = bias_ticks + gain_ticks * (target_resting - len(resting_ids)) / target_resting
                distance = round(rng.gauss(shift_ticks, PRICE_SD_TICKS))
                distance = max(-PRICE_CLIP_TICKS, min(PRICE_CLIP_TICKS, distance))
                price_ticks = MID_PRICE_TICKS - distance if side == BUY else MID_PRICE_TICKS + distance
                command = NewOrder(
                    order_id, user_id, side, price_ticks=price_ticks, quantity_lots=quantity_lots,
                    timestamp=timestamp,
                )
            else:
                command = NewOrder(
                    order_id, user_id, side, MARKET, quantity_lots=quantity_lots, timestamp=timestamp
                )
        commands.append(command)
        events = book.apply(command)
        traded = False
        for event in events:
            kind = event.kind
            if kind == "ACCEPTED" and event.order_type != MARKET:
                position[event.order_id] = len(resting_ids)
                resting_ids.append(event.order_id)
                owner[event.order_id] = event.user_id
            elif kind in ("FILLED", "CANCELED", "EXPIRED"):
                forget(event.order_id)
                owner.pop(event.order_id, None)
            elif kind == "TRADE":
                trades += 1
                traded = True
        if command.__class__ is CancelOrder:
            kinds.append(2)
        elif command.order_type == MARKET:
            kinds.append(3)
        else:
            kinds.append(1 if traded else 0)
            crossed_limits += traded
        if i % 1000 == 999:
            resting_samples.append(len(resting_ids))
    steady = resting_samples[len(resting_samples) // 2 :] or [len(resting_ids)]
    stats = {
        "crossing_limit_share": crossed_limits / limits if limits else 0.0,
        "resting_orders_median": int(statistics.median(steady)),
        "trades": trades,
        "events": book.sequence,
        "kinds": kinds,
    }
    return commands, stats, book.sequence



def throughput_pass(commands):
    book = OrderBook("BENCH")
    apply = book.apply
    started = time.perf_counter()
    for command in commands:
        apply(command)
    elapsed = time.perf_counter() - started
    return len(commands) / elapsed, book.sequence


def latency_pass(commands, kinds):
    """Per-call latencies: (p50_us, p99_us, final sequence, {kind: p50_us})."""
    book = OrderBook("BENCH")
    apply = book.apply
    clock = time.perf_counter_ns
    latencies = [0] * len(commands)
    i = 0
    for command in commands:
        started = clock()
        apply(command)
        latencies[i] = clock() - started
        i += 1
    by_kind = {}
    for kind, name in enumerate(KIND_NAMES):
        mine = sorted(latency for latency, k in zip(latencies, kinds) if k == kind)
        if mine:
            by_kind[name] = mine[len(mine) // 2] / 1000
    latencies.sort()
    n = len(latencies)
    return latencies[n // 2] / 1000, latencies[min(n - 1, (n * 99) // 100)] / 1000, book.sequence, by_kind


def timer_overhead_ns():
    clock = time.perf_counter_ns
    samples = []
    for _ in range(100_000):
        started = clock()
        samples.append(clock() - started)
    samples.sort()
    return samples[len(samples) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m matching.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--commands", type=int, default=1_000_000)
    parser.add_argument("--mix", type=parse_mix, default=(70, 20, 10), help="LIMIT/CANCEL/MARKET percentages")
    parser.add_argument("--bias", type=float, default=5.5, help="mean passive distance from mid at the target size, ticks")
    parser.add_argument("--target-resting", type=int, default=1000, help="book size the price feedback aims at")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    commands, stats, expected_sequence = generate(
        args.seed, args.commands, args.mix, args.bias, args.users, args.target_resting
    )
    print(
        f"generated {len(commands):,} commands (mix {'/'.join(map(str, args.mix))}, seed {args.seed}) "
        f"in {time.perf_counter() - started:.1f} s: crossing limits {stats['crossing_limit_share']:.1%}, "
        f"resting orders (median) {stats['resting_orders_median']:,}, trades {stats['trades']:,}, "
        f"events {stats['events']:,} ({stats['events'] / len(commands):.2f}/command)"
    )
    print(f"python {platform.python_version()} on {platform.machine()}; timer overhead {timer_overhead_ns()} ns")
    gc.collect()
    gc.freeze()

    rates, p50s, p99s = [], [], []
    for run in range(1, args.runs + 1):
        rate, sequence = throughput_pass(commands)
        assert sequence == expected_sequence, "replay diverged from generation"
        p50, p99, sequence, by_kind = latency_pass(commands, stats["kinds"])
        assert sequence == expected_sequence, "replay diverged from generation"
        rates.append(rate)
        p50s.append(p50)
        p99s.append(p99)
        print(f"run {run}: commands_per_s={rate:,.0f} p50_us={p50:.2f} p99_us={p99:.2f}")
        print("       p50 by kind: " + ", ".join(f"{name} {value:.2f} us" for name, value in by_kind.items()))
    print(
        f"commands_per_s={int(statistics.median(rates))} "
        f"p50_us={statistics.median(p50s):.2f} p99_us={statistics.median(p99s):.2f}"
    )


if __name__ == "__main__":
    main()
