"""``manage.py run_matcher SYMBOL``: the matcher of one market, until SIGTERM/SIGINT."""

import signal

from django.core.management.base import BaseCommand, CommandError

from exchange.models import Market
from matching.worker.matcher import Matcher, MatcherAlreadyRunning


class Command(BaseCommand):
    help = "Run the matcher of one market: the only writer of its book, orders and trades."

    def add_arguments(self, parser):
        parser.add_argument("symbol")
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--block-ms", type=int, default=50)

    def handle(self, *args, symbol: str, batch_size: int, block_ms: int, **options):
        symbol = symbol.upper()
        if not Market.objects.filter(symbol=symbol).exists():
            raise CommandError(f"no market {symbol}")
        stop = {"requested": False}

        def request_stop(signum, frame):
            stop["requested"] = True

        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
        try:
            Matcher(symbol, batch_size=batch_size, block_ms=block_ms).run(lambda: stop["requested"])
        except MatcherAlreadyRunning as exc:
            raise CommandError(str(exc))
