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
        stop = {"requested": False}
        matcher = Matcher(symbol, batch_size=batch_size, block_ms=block_ms)

        def request_stop(signum, frame):
            if standby and not matcher.locked:
                # Waiting for the lock: nothing held, nothing to finish. (An
                # exception raised here would have to unwind through the
                # database driver's wait first.)
                os._exit(0)
            stop["requested"] = True  # recovering or running: stop after the current batch

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        try:
            matcher.run(lambda: stop["requested"], on_ready=ready_notifier(),
                        lock_wait_s=None if standby else lock_wait)
        except MatcherAlreadyRunning as exc:
            raise CommandError(str(exc))
