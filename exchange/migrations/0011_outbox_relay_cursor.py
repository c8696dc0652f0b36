# The outbox relay publishes by transaction (a cursor over snapshots) instead of
# marking every row PUBLISHED: see exchange/outbox/relay.py and docs/EVENTS.md.

import django.contrib.postgres.indexes
import django.db.models.functions.datetime
import exchange.core.horizon
import exchange.outbox.models
from django.db import migrations, models

# Existing rows: PUBLISHED and FAILED ones get transaction id 1, which every
# snapshot sees as finished (the cursor starts at '2:2:'), so the cursor never
# publishes them again; PENDING ones keep this migration's transaction id and
# are published by the first epoch. The first FAILED row of each (topic, key)
# stays FAILED (the head of its key), the others wait behind it.
CARRY_OVER = """
    UPDATE exchange_outboxevent SET txid = '1', delivery = NULL, next_attempt_at = NULL
    WHERE status = 'PUBLISHED';
    UPDATE exchange_outboxevent e SET txid = '1', next_attempt_at = NULL,
        delivery = CASE WHEN e.id = f.head THEN 'FAILED' ELSE 'WAITING' END
    FROM (SELECT topic, key, min(id) AS head FROM exchange_outboxevent WHERE status = 'FAILED' GROUP BY topic, key) f
    WHERE e.status = 'FAILED' AND e.topic = f.topic AND e.key = f.key;
    UPDATE exchange_outboxevent SET next_attempt_at = NULL WHERE status = 'PENDING';
    INSERT INTO exchange_outboxcursor (id, published_snapshot) VALUES (1, '2:2:');
"""


class Migration(migrations.Migration):

    dependencies = [
        ('exchange', '0010_username_unique_normalized'),
    ]

    operations = [
        migrations.CreateModel(
            name='OutboxCursor',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('published_snapshot', exchange.outbox.models.SnapshotField()),
                ('epoch_snapshot', exchange.outbox.models.SnapshotField(blank=True, null=True)),
                ('epoch_after_id', models.BigIntegerField(db_default=0, default=0)),
                ('epoch_last_id', models.BigIntegerField(db_default=0, default=0)),
                ('bus_attempts', models.PositiveIntegerField(db_default=0, default=0, help_text='Consecutive batches the bus did not confirm.')),
                ('bus_retry_at', models.DateTimeField(blank=True, null=True)),
                ('bus_error', models.TextField(blank=True, db_default='', default='')),
                ('updated_at', models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
            ],
            options={
                'constraints': [models.CheckConstraint(condition=models.Q(('id', 1)), name='outbox_cursor_single_row')],
            },
        ),
        migrations.AddField(
            model_name='outboxevent',
            name='delivery',
            field=models.CharField(blank=True, choices=[('RETRY', 'Retry (first of its key set aside: published at next_attempt_at)'), ('FAILED', 'Failed (refused by the bus: requeue after fixing the cause)'), ('WAITING', 'Waiting (behind a retrying or failed event of its key)')], help_text='Empty unless the relay set the event aside.', max_length=8, null=True),
        ),
        migrations.AddField(
            model_name='outboxevent',
            name='txid',
            field=exchange.core.horizon.TransactionIdField(),
        ),
        migrations.AlterField(
            model_name='outboxevent',
            name='attempts',
            field=models.PositiveIntegerField(db_default=0, default=0, help_text='Times the bus refused the event.'),
        ),
        migrations.AlterField(
            model_name='outboxevent',
            name='next_attempt_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.RunSQL(CARRY_OVER, reverse_sql=migrations.RunSQL.noop),
        migrations.RemoveConstraint(
            model_name='outboxevent',
            name='outbox_status_valid',
        ),
        migrations.RemoveIndex(
            model_name='outboxevent',
            name='outbox_unpublished_idx',
        ),
        migrations.RemoveIndex(
            model_name='outboxevent',
            name='outbox_retrying_idx',
        ),
        migrations.RemoveField(
            model_name='outboxevent',
            name='published_at',
        ),
        migrations.RemoveField(
            model_name='outboxevent',
            name='status',
        ),
        migrations.AddIndex(
            model_name='outboxevent',
            index=models.Index(fields=['txid'], name='outbox_txid_idx'),
        ),
        migrations.AddIndex(
            model_name='outboxevent',
            index=models.Index(condition=models.Q(('delivery__in', ['RETRY', 'FAILED'])), fields=['topic', 'key'], name='outbox_head_idx'),
        ),
        migrations.AddIndex(
            model_name='outboxevent',
            index=models.Index(condition=models.Q(('delivery', 'WAITING')), fields=['topic', 'key', 'id'], name='outbox_waiting_idx'),
        ),
        migrations.AddConstraint(
            model_name='outboxevent',
            constraint=models.CheckConstraint(condition=models.Q(('delivery__in', ['RETRY', 'FAILED', 'WAITING'])), name='outbox_delivery_valid'),
        ),
        migrations.AddIndex(
            model_name='processedevent',
            index=django.contrib.postgres.indexes.BrinIndex(fields=['processed_at'], name='processed_event_at_brin'),
        ),
    ]
