"""``manage.py run_outbox_relay``: the outbox relay, until SIGTERM/SIGINT (exchange.outbox.relay)."""

import logging
import signal
import threading

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db.backends.signals import connection_created

from exchange.outbox.bus import get_bus
from exchange.outbox.relay import outbox_relay_forever

logger = logging.getLogger(__name__)

APPLICATION_NAME = "exchange-outbox-relay"


def _name_connection(sender, connection, **kwargs) -> None:
    """Show the relay's sessions as such in pg_stat_activity (operators, bench_outbox)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('application_name', %s, false)", [APPLICATION_NAME])


class Command(BaseCommand):
    help = "Relay outbox events to the event bus (Kafka, or Redis streams), polling while there are none."

    def add_arguments(self, parser):
        parser.add_argument("--poll-ms", type=int, default=settings.OUTBOX_RELAY_POLL_MS,
                            help="how often to look for new events when there are none (OUTBOX_RELAY_POLL_MS)")

    def handle(self, *args, poll_ms: int, **options):
        connection_created.connect(_name_connection)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
        signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
        bus = get_bus()
        logger.info("outbox relay started", extra={"bus": bus.name, "poll_ms": poll_ms})
        try:
            outbox_relay_forever(stop=stop, bus=bus, poll_s=poll_ms / 1000)
        finally:
            bus.close()
        logger.info("outbox relay stopped")
