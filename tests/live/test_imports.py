"""The live layer does not import the REST layer: exchange/live/publish.py is
imported by orders.services, which the REST views import, so the reverse
import was a circle (publish -> orders.api.views -> orders.services -> publish).
Checked in a fresh interpreter, where nothing else has loaded the views."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
import django
django.setup()
import exchange.live.publish, exchange.live.consumers, exchange.live.fanout
from exchange.live.publish import MarketPublisher, order_accepted_publish, ticker_data, balances_data
print(json.dumps(sorted(name for name in sys.modules if name.endswith(".api.views"))))
"""


def test_live_layer_imports_no_rest_view():
    env = dict(os.environ, DJANGO_SETTINGS_MODULE=os.environ.get("DJANGO_SETTINGS_MODULE", "exchange.settings.base"))
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert not loaded, f"the live layer loads REST views: {loaded}"


def test_live_sources_name_no_rest_view():
    """The static side of the same rule (a lazy import inside a function would
    escape the probe above until that function runs)."""
    for path in (ROOT / "exchange" / "live").glob("*.py"):
        text = path.read_text()
        assert "api.views" not in text, f"{path.name} imports a REST view"
