"""bench_audit_export runs end to end on a small volume and reports what docs/BENCHMARKS.md records."""

import re

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db(transaction=True)


def test_bench_audit_export_reports_rates_and_memory(capsys, redis_app):
    """Chaining, verifying and both exports through the ASGI app complete and are reported."""
    call_command("bench_audit_export", "--rows", "3000", "--here")

    out = capsys.readouterr().out
    assert re.search(r"chain: .* rows/s", out) and re.search(r"verify: .* rows/s", out)
    assert "export csv:" in out and "export jsonl:" in out
    assert re.search(r"^rows=3000 export_csv_rows_per_s=\d+ export_rss_growth_mb=-?\d+$", out, re.M)
