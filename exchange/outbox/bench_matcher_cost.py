"""What the outbox costs the matcher, in CPU per order (docs/BENCHMARKS.md).

    python -m exchange.outbox.bench_matcher_cost --orders 30000 --runs 3

Runs ``manage.py bench_matcher`` in this process, alternately without and
with the outbox statements of the batch and the ledger (patched out for the
"without" runs), and sums over every ``BatchApplier.apply`` the matcher
thread's CPU time and the CPU time of its PostgreSQL backend (read from
/proc, so the server must run on this machine, as the embedded one does).
CPU time is far less disturbed than wall time by other work on a shared
machine. Prints one line per run and the medians.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time


def _backend_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=30_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings.base")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from matching.worker.batch import BatchApplier
    from wallet.ledger import Posting

    real = (BatchApplier._order_event_flags, BatchApplier._emit_trade_events, Posting._emit_balance_events)
    real_apply = BatchApplier.apply
    spent = {}

    def apply(self, commands):
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            pid = cursor.fetchone()[0]
        python, backend = time.thread_time(), _backend_cpu_s(pid)
        result = real_apply(self, commands)
        spent["python"] += time.thread_time() - python
        spent["postgres"] += _backend_cpu_s(pid) - backend
        return result

    def outbox(on: bool) -> None:
        if on:
            BatchApplier._order_event_flags = staticmethod(real[0])
            BatchApplier._emit_trade_events, Posting._emit_balance_events = real[1], real[2]
        else:
            BatchApplier._order_event_flags = staticmethod(lambda changes: [False] * len(changes))
            BatchApplier._emit_trade_events = lambda self, rows: None
            Posting._emit_balance_events = lambda self, cursor, changed: None

    BatchApplier.apply = apply
    results: dict[str, list[dict]] = {"without": [], "with": []}
    for _ in range(args.runs):
        for name in results:
            outbox(name == "with")
            spent.update(python=0.0, postgres=0.0)
            call_command("bench_matcher", orders=args.orders, stdout=io.StringIO())
            per_order = {key: value / args.orders * 1e6 for key, value in spent.items()}
            results[name].append(per_order)
            print(f"{name} outbox: cpu_us_per_order={per_order['python'] + per_order['postgres']:.1f} "
                  f"python_us={per_order['python']:.1f} postgres_us={per_order['postgres']:.1f}", flush=True)
    for name, runs in results.items():
        print(f"median {name} outbox: cpu_us_per_order="
              f"{statistics.median(r['python'] + r['postgres'] for r in runs):.1f} "
              f"python_us={statistics.median(r['python'] for r in runs):.1f} "
              f"postgres_us={statistics.median(r['postgres'] for r in runs):.1f}")


if __name__ == "__main__":
    main()
