"""manage.py bench_matcher (tiny size here): the drain it times applies every command."""

import re
from io import StringIO

import pytest
from django.core.management import call_command

from orders.models import Order, Trade
from wallet.invariants import ledger_violations

pytestmark = pytest.mark.django_db(transaction=True)


def test_bench_matcher_times_the_matching_of_every_command(redis_app):
    out = StringIO()

    call_command("bench_matcher", orders=400, batch_size=100, users=5, stdout=out)

    lines = out.getvalue().strip().splitlines()
    assert re.fullmatch(r"orders_per_s=\d+ apply_p99_ms=\d+\.\d", lines[-1]), lines[-1]
    # (The command refuses to time a drain whose orders were matched before the clock started.)
    assert re.search(r"400 commands in [\d.]+s, 4 batches, (\d+) trades", out.getvalue()), out.getvalue()
    trades = int(re.search(r", (\d+) trades;", out.getvalue()).group(1))
    assert trades == Trade.objects.count() > 0
    assert not Order.objects.filter(status="PENDING").exists()
    assert ledger_violations() == []
