"""Recompute the audit log's hash chain; exit 0 when it holds, 1 naming the first problem otherwise."""

import sys

from django.core.management.base import BaseCommand

from exchange.audit.chain import audit_verify


class Command(BaseCommand):
    help = ("Recompute the audit chain from the last retention checkpoint to its signed head. Exit status 0: "
            "the chain holds; 1: a row was altered, deleted or inserted (the first one is named, then up to "
            "--show others).")

    def add_arguments(self, parser):
        parser.add_argument("--show", type=int, default=20, help="Problems listed after the first (default 20).")

    def handle(self, *args, show=20, **options):
        result = audit_verify()
        summary = (f"{result.checked} link(s) checked from position {result.checkpoint_seq + 1} to "
                   f"{result.head_seq}; {result.pending} row(s) not chained yet")
        if result.ok:
            self.stdout.write(f"OK: the audit chain holds ({summary}).")
            return
        first = result.first
        self.stderr.write(f"FAILED: {first.message}")
        others = sorted((p for p in result.problems if p is not first), key=lambda p: p.position)
        for problem in others[:show]:
            self.stderr.write(f"  also: {problem.message}")
        if len(others) > show:
            self.stderr.write(f"  ... and {len(others) - show} more")
        self.stderr.write(f"({summary}.)")
        sys.exit(1)
