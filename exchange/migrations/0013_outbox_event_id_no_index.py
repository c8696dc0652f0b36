# event_id keeps its random default but loses its unique index: see OutboxEvent.event_id.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('exchange', '0012_outbox_payload_json'),
    ]

    operations = [
        migrations.AlterField(
            model_name='outboxevent',
            name='event_id',
            field=models.UUIDField(db_default=models.Func(function='gen_random_uuid'), editable=False),
        ),
    ]
