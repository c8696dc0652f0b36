"""Chain the audit rows committed since the last run (what beat does every second)."""

from django.core.management.base import BaseCommand

from exchange.audit.chain import audit_chain


class Command(BaseCommand):
    help = ("Give every committed audit row not chained yet its chain position and hash, and publish it on "
            "audit.logs. Celery beat runs this every AUDIT_CHAIN_INTERVAL_S; run it by hand before verifying.")

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=None, help="Rows per transaction.")

    def handle(self, *args, batch_size=None, **options):
        count = audit_chain(batch_size=batch_size)
        self.stdout.write(f"Chained {count} audit row(s).")
