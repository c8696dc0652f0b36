"""manage.py bench_rebuild (tiny size here): the book it times is the book it wrote."""

import re
from io import StringIO

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db(transaction=True)


def test_bench_rebuild_restores_every_order_it_wrote(redis_app):
    out = StringIO()

    call_command("bench_rebuild", orders=300, runs=2, here=True, stdout=out)

    lines = out.getvalue().strip().splitlines()
    runs = [line for line in lines if line.startswith("run ")]
    assert len(runs) == 2
    # Bids sit one tick and more below the mid (10,000,000 ticks), asks above.
    assert all("best bid 9999999 ask 10000001, 300 orders resting" in line for line in runs), runs
    assert all("from a snapshot 75 changes behind" in line for line in runs), runs
    assert re.fullmatch(r"orders=300 restart_s=\d+\.\d\d rebuild_s=\d+\.\d\d snapshot_restart_s=\d+\.\d\d "
                        r"stale_snapshot_restart_s=\d+\.\d\d", lines[-1]), lines[-1]
