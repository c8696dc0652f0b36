"""manage.py bench_ledger runs (tiny sizes here) and ends with the line BENCHMARKS.md quotes."""

import re
from io import StringIO

import pytest
from django.core.management import call_command

from wallet.invariants import assert_ledger_sound
from wallet.models import LedgerTransaction

pytestmark = pytest.mark.django_db


def test_bench_ledger_settles_the_trades_it_reports():
    """The benchmark really settles every trade it counts, leaves a sound ledger and prints the summary line."""
    out = StringIO()

    call_command("bench_ledger", trades=30, batch=10, runs=2, users=4, here=True, stdout=out)

    last = out.getvalue().strip().splitlines()[-1]
    assert re.fullmatch(r"trades_per_s=\d+ batch_p50_ms=\d+\.\d batch_p99_ms=\d+\.\d", last), last
    assert LedgerTransaction.objects.filter(kind="TRADE").count() == 60
    assert_ledger_sound()
