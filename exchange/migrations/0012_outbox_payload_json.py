# The payload is written once and read once, as text: PostgreSQL json keeps the text
# as written, with no conversion to jsonb and back (exchange.outbox.models.JSONTextField).
# Changing the type rewrites the table under an exclusive lock, which stops every writer
# of events (placements, matchers, the ledger) until it ends: on a large outbox, prune
# it first (outbox_prune) or run this in a maintenance window.

import exchange.outbox.models
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('exchange', '0011_outbox_relay_cursor'),
    ]

    operations = [
        migrations.AlterField(
            model_name='outboxevent',
            name='payload',
            field=exchange.outbox.models.JSONTextField(encoder=exchange.outbox.models.EventJSONEncoder),
        ),
    ]
