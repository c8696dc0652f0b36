"""``manage.py run_matchers``: one matcher process per market, restarted when it dies.

Markets are re-read every few seconds, so a market the operator adds gets a
matcher without a restart. A matcher that keeps dying is restarted with a
growing delay (up to a minute), and its exit is logged each time.
"""

import logging
import signal
import sys
import time

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections

from exchange import processes
from exchange.models import Market

logger = logging.getLogger(__name__)

POLL_S = 3.0
MAX_BACKOFF_S = 60.0


class Command(BaseCommand):
    help = "Run and supervise one matcher process per market."

    def handle(self, *args, **options):
        stop = {"requested": False}

        def request_stop(signum, frame):
            stop["requested"] = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        children: dict[str, processes.Child] = {}
        restarts: dict[str, tuple[int, float]] = {}  # symbol -> (failures, not before)
        try:
            while not stop["requested"]:
                close_old_connections()
                symbols = list(Market.objects.order_by("symbol").values_list("symbol", flat=True))
                now = time.monotonic()
                for symbol in symbols:
                    child = children.get(symbol)
                    if child is not None and child.alive():
                        continue
                    if child is not None:
                        failures = restarts.get(symbol, (0, 0))[0] + 1
                        delay = min(MAX_BACKOFF_S, 0.5 * 2 ** failures)
                        restarts[symbol] = (failures, now + delay)
                        logger.error("matcher exited; restarting",
                                     extra={"symbol": symbol, "status": child.popen.returncode, "delay_s": delay})
                        del children[symbol]
                    if now < restarts.get(symbol, (0, 0))[1]:
                        continue
                    children[symbol] = processes.spawn(
                        f"matcher-{symbol}", [sys.executable, str(settings.BASE_DIR / "manage.py"), "run_matcher", symbol])
                for symbol, (failures, _) in list(restarts.items()):
                    child = children.get(symbol)
                    if child is not None and child.alive() and failures and time.monotonic() - child.started_at > 60:
                        restarts[symbol] = (0, 0)  # a minute up: it has recovered
                deadline = time.monotonic() + POLL_S
                while time.monotonic() < deadline and not stop["requested"]:
                    time.sleep(0.2)
        finally:
            processes.stop(list(children.values()))

