from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from exchange.audit.services import audit_system
from exchange.demo import DEMO_USERS, demo_load


class Command(BaseCommand):
    help = "Load the demo assets, markets and users (idempotent)."

    def handle(self, *args, **options):
        if not settings.EXCHANGE_DEMO_ALLOWED:
            raise CommandError("The demo cannot be loaded with these settings (production): its users have a "
                               "published password.")
        demo_load(password=settings.EXCHANGE_DEMO_PASSWORD, audit=audit_system("manage.py load_demo"))
        users = ", ".join(user.username for user in DEMO_USERS)
        self.stdout.write(f"demo loaded: users {users}")
