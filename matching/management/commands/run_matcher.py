"""``manage.py run_matcher SYMBOL``: the matcher of one market, until SIGTERM/SIGINT.

Under ``run_matchers`` the environment names a pipe (``MATCHER_READY_FD``) on
which the matcher writes one byte once its recovery is done: the supervisor
restarts a matcher that exits after that at once, and one that exits before
it with a growing delay.
"""

import os
import signal

from django.core.management.base import BaseCommand, CommandError

from exchange.models import Market
from matching.worker.matcher import Matcher, MatcherAlreadyRunning

READY_FD_ENV = "MATCHER_READY_FD"


def ready_notifier():
    """A callable that tells the supervisor (if any) that this matcher is ready."""
    raw = os.environ.pop(READY_FD_ENV, "")
    if not raw.isdigit():
        return None
    fd = int(raw)

    def notify():
        try:
            os.write(fd, b"R")
            os.close(fd)
        except OSError:
            pass  # the supervisor is gone; nothing to tell

    return notify


class Command(BaseCommand):
    help = "Run the matcher of one market: the only writer of its book, orders and trades."

    def add_arguments(self, parser):
        parser.add_argument("symbol")
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--block-ms", type=int, default=50)
        parser.add_argument("--lock-wait", type=float, default=3.0,
                            help="seconds to wait for the market's lock (a killed predecessor's session)")
        parser.add_argument("--standby", action="store_true",
                            help="wait for the market's lock as long as it takes, then take over")

    def handle(self, *args, symbol: str, batch_size: int, block_ms: int, lock_wait: float, standby: bool,
               **options):
        symbol = symbol.upper()
        if not Market.objects.filter(symbol=symbol).exists():
            raise CommandError(f"no market {symbol}")
        stop = {"requested": False, "started": False}

        def request_stop(signum, frame):
            if not stop["started"]:
                raise SystemExit(0)  # waiting for the lock (a standby) or recovering: nothing to finish
            stop["requested"] = True

        notify = ready_notifier()

        def on_ready():
            stop["started"] = True
            if notify is not None:
                notify()

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        try:
            Matcher(symbol, batch_size=batch_size, block_ms=block_ms).run(
                lambda: stop["requested"], on_ready=on_ready, lock_wait_s=None if standby else lock_wait)
        except MatcherAlreadyRunning as exc:
            raise CommandError(str(exc))
