"""Re-encrypt every API key secret with the current encryption key (step 2 of a key rotation)."""

from django.core.management.base import BaseCommand

from exchange.apikeys.services import api_key_secrets_reencrypt
from exchange.audit.services import audit_system


class Command(BaseCommand):
    help = (
        "Re-encrypt all API key secrets with the first key of API_KEY_ENCRYPTION_KEY. Rotation: put the new key "
        "first (keep the old ones), run this, then remove the old keys."
    )

    def handle(self, *args, **options):
        count = api_key_secrets_reencrypt(audit=audit_system("manage.py api_keys_reencrypt"))
        self.stdout.write(f"Re-encrypted {count} API key secret(s).")
