from django.core.management.base import BaseCommand

from exchange.audit.services import audit_system
from exchange.roles import roles_sync


class Command(BaseCommand):
    help = "Create or update the Operators, Support and Compliance groups with least-privilege permissions."

    def handle(self, *args, **options):
        groups = roles_sync(audit=audit_system("manage.py sync_roles"))
        for name, group in groups.items():
            self.stdout.write(f"{name}: {group.permissions.count()} permissions")
