"""manage.py check_ledger: verify every ledger invariant; exit 1 and name the rows if one fails."""

import time

from django.core.management.base import BaseCommand, CommandError

from wallet.invariants import ledger_violations


class Command(BaseCommand):
    help = "Verify the ledger's invariants (see wallet.invariants); non-zero exit on any violation."

    def handle(self, *args, **options):
        started = time.perf_counter()
        violations = ledger_violations()
        elapsed_ms = (time.perf_counter() - started) * 1000
        for violation in violations:
            self.stdout.write(str(violation))
        if violations:
            raise CommandError(f"ledger check failed: {len(violations)} violation(s) in {elapsed_ms:.0f} ms")
        self.stdout.write(f"ledger ok: every invariant holds ({elapsed_ms:.0f} ms)")
