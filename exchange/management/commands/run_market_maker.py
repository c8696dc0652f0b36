"""``manage.py run_market_maker``: the demo market maker (exchange/market_maker.py).

It signs its requests with an API key of the ``maker`` demo user that it
creates at start (revoking the keys its earlier runs left) and revokes when
it stops, so no secret outlives the process. SIGTERM or Ctrl-C stops it
between requests; it then cancels its quotes and exits 0.
"""

from __future__ import annotations

import signal
import threading
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from exchange.apikeys.models import ApiKey
from exchange.apikeys.services import api_key_create, api_key_revoke_many
from exchange.demo import MARKET_MAKER_USERNAME
from exchange.market_maker import MakerHttp, MarketMaker

KEY_LABEL = "demo market maker"


class Command(BaseCommand):
    help = "Quote a few levels on each side of every TRADING market through the API, and trade now and then."

    def add_arguments(self, parser):
        parser.add_argument("--url", default=f"http://{settings.EXCHANGE_HOST}:{settings.EXCHANGE_PORT}",
                            help="Base URL of the exchange's API.")
        parser.add_argument("--user", default=MARKET_MAKER_USERNAME, help="The user whose funds it quotes with.")
        parser.add_argument("--levels", type=int, default=5, help="Quotes per side and market.")
        parser.add_argument("--interval", type=float, default=1.0, help="Seconds between rounds over the markets.")
        parser.add_argument("--level-notional", type=Decimal, default=Decimal(1000),
                            help="Average size of a quote, in the quote asset.")
        parser.add_argument("--taker-probability", type=float, default=0.2,
                            help="Chance per market and round of a small order across the spread.")
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument("--duration", type=float, default=0, help="Stop after this many seconds (0: run until stopped).")

    def handle(self, *args, url, user, levels, interval, level_notional, taker_probability, seed, duration, **options):
        if levels < 1 or interval <= 0 or level_notional <= 0:
            raise CommandError("--levels must be at least 1, --interval and --level-notional positive")
        owner = get_user_model().objects.filter(username=user).first()
        if owner is None:
            raise CommandError(f"no user {user!r}: load the demo first (manage.py load_demo)")
        api_key_revoke_many(api_keys=ApiKey.objects.filter(user=owner, label=KEY_LABEL))
        key, secret = api_key_create(user=owner, label=KEY_LABEL, permissions=["read", "trade"], ip_allowlist=[])

        stop_event = threading.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop_event.set())
        maker = MarketMaker(
            MakerHttp(url, key.key_id, secret, stop_event=stop_event), levels=levels, interval_s=interval,
            level_notional=level_notional, taker_probability=taker_probability, seed=seed,
        )
        self.stdout.write(f"market maker: quoting as {owner.username} on {url}")
        self.stdout.flush()
        try:
            maker.run(duration_s=duration or None)
        finally:
            maker.shutdown()
            api_key_revoke_many(api_keys=ApiKey.objects.filter(pk=key.pk))
        stats = ", ".join(f"{name} {count}" for name, count in maker.stats.items())
        self.stdout.write(f"market maker: stopped ({stats}; {maker.http.retries} retries)")
