"""manage.py bench_matcher (tiny size here): the drain it times applies every command."""

import re
from io import StringIO

import pytest
from django.core.management import call_command

from exchange.models import Market
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


def test_bench_matcher_runs_several_markets_matchers_at_once_to_completion(redis_app):
    """--markets 2: each market's matcher runs in its own process (a fresh
    ``manage.py bench_matcher --drain``, on this test's database) and drains
    every one of its market's commands; the per-market lines agree with the
    database, the CPU is summed over both, the ledger balances."""
    out = StringIO()

    call_command("bench_matcher", markets=2, orders=300, batch_size=100, users=5, stdout=out)

    text = out.getvalue()
    lines = text.strip().splitlines()
    assert re.fullmatch(r"orders_per_s=\d+ apply_p99_ms=\d+\.\d total_orders_per_s=\d+", lines[-1]), lines[-1]
    per_market = re.findall(r"^(B\w{6}-BUSD): 300 commands in [\d.]+s, 3 batches, (\d+) trades;", text, re.M)
    markets = Market.objects.filter(symbol__in=[symbol for symbol, _ in per_market])
    assert len(per_market) == markets.count() == 2, text
    for symbol, trades in per_market:
        market = markets.get(symbol=symbol)
        assert Order.objects.filter(market=market).count() > 0
        assert int(trades) == Trade.objects.filter(market=market).count() > 0
    assert "2 matcher processes at once: 600 commands in" in text
    assert "summed over 2 matchers" in text
    assert not Order.objects.filter(status="PENDING").exists()
    assert ledger_violations() == []
