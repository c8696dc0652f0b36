"""Staff money actions under the four-eyes rule (MoneyAction), and withdrawal review split into
approving (approve_withdrawal) and completing (complete_withdrawal); the old combined permission
review_withdrawal is removed."""

import django.db.models.deletion
import django.db.models.functions.datetime
from django.conf import settings
from django.db import migrations, models


def remove_review_permission(apps, schema_editor):
    Permission = apps.get_model("auth", "Permission")
    Permission.objects.filter(content_type__app_label="wallet", codename="review_withdrawal").delete()


class Migration(migrations.Migration):

    dependencies = [
        ('exchange', '0007_audit_market_status_applied'),
        ('wallet', '0002_journal_integrity'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
        ('auth', '0012_alter_user_first_name_max_length'),
        ('contenttypes', '0002_remove_content_type_name'),
    ]

    operations = [
        migrations.AlterModelOptions(
            name='withdrawal',
            options={'ordering': ['-id'], 'permissions': [('approve_withdrawal', 'Can approve and reject withdrawals'), ('complete_withdrawal', 'Can record withdrawals as sent')]},
        ),
        migrations.CreateModel(
            name='MoneyAction',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('kind', models.CharField(choices=[('DEPOSIT_CREDIT', 'Credit a deposit'), ('BALANCE_ADJUST', 'Adjust a balance'), ('WITHDRAWAL_APPROVE', 'Approve a withdrawal')], max_length=24)),
                ('status', models.CharField(choices=[('PENDING', 'Waiting for a second staff member'), ('EXECUTED', 'Executed'), ('REJECTED', 'Rejected by the second staff member'), ('CANCELED', 'Canceled (the withdrawal was rejected meanwhile)')], max_length=10)),
                ('amount', models.DecimalField(decimal_places=18, help_text='Signed for adjustments (negative takes away).', max_digits=38)),
                ('txid', models.CharField(blank=True, default='', help_text="A deposit's external transaction id.", max_length=128)),
                ('reason', models.TextField(help_text='Why, from the staff member who asked; recorded on the journal.')),
                ('four_eyes', models.BooleanField(help_text="Above the asset's threshold: a second staff member decides.")),
                ('requested_at', models.DateTimeField(db_default=django.db.models.functions.datetime.Now())),
                ('decided_at', models.DateTimeField(blank=True, null=True)),
                ('decision_reason', models.TextField(blank=True, default='')),
                ('asset', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='exchange.asset')),
                ('decided_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('deposit', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='wallet.deposit')),
                ('journal_transaction', models.ForeignKey(blank=True, help_text='The ledger transaction it posted.', null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='wallet.ledgertransaction')),
                ('requested_by', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('user', models.ForeignKey(help_text='Whose account the money moves on.', on_delete=django.db.models.deletion.PROTECT, related_name='+', to=settings.AUTH_USER_MODEL)),
                ('withdrawal', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='money_actions', to='wallet.withdrawal')),
            ],
            options={
                'ordering': ['-id'],
                'indexes': [models.Index(condition=models.Q(('status', 'PENDING')), fields=['id'], name='wallet_moneyaction_pending')],
                'constraints': [models.CheckConstraint(condition=models.Q(('kind__in', ['DEPOSIT_CREDIT', 'BALANCE_ADJUST', 'WITHDRAWAL_APPROVE'])), name='wallet_moneyaction_kind_valid'), models.CheckConstraint(condition=models.Q(('status__in', ['PENDING', 'EXECUTED', 'REJECTED', 'CANCELED'])), name='wallet_moneyaction_status_valid'), models.CheckConstraint(condition=models.Q(('amount', 0), _negated=True), name='wallet_moneyaction_amount_not_zero'), models.CheckConstraint(condition=models.Q(('reason', ''), _negated=True), name='wallet_moneyaction_reason_required'), models.CheckConstraint(condition=models.Q(models.Q(('kind', 'WITHDRAWAL_APPROVE'), ('withdrawal__isnull', False)), models.Q(models.Q(('kind', 'WITHDRAWAL_APPROVE'), _negated=True), ('withdrawal__isnull', True)), _connector='OR'), name='wallet_moneyaction_withdrawal_iff_approval'), models.CheckConstraint(condition=models.Q(('requested_by', models.F('user')), _negated=True), name='wallet_moneyaction_not_own_request'), models.CheckConstraint(condition=models.Q(('decided_by__isnull', True), models.Q(('decided_by', models.F('user')), _negated=True), _connector='OR'), name='wallet_moneyaction_not_own_decision'), models.CheckConstraint(condition=models.Q(models.Q(('status', 'PENDING'), _negated=True), ('four_eyes', True), _connector='OR'), name='wallet_moneyaction_pending_needs_four_eyes'), models.CheckConstraint(condition=models.Q(models.Q(('four_eyes', True), ('status__in', ['EXECUTED', 'REJECTED']), _negated=True), models.Q(('decided_by__isnull', False), models.Q(('decided_by', models.F('requested_by')), _negated=True)), _connector='OR'), name='wallet_moneyaction_second_person_decides'), models.UniqueConstraint(condition=models.Q(('status', 'PENDING')), fields=('withdrawal',), name='wallet_moneyaction_one_pending_per_withdrawal'), models.UniqueConstraint(condition=models.Q(('kind', 'DEPOSIT_CREDIT'), ('status__in', ['PENDING', 'EXECUTED'])), fields=('asset', 'txid'), name='wallet_moneyaction_one_credit_per_txid')],
            },
        ),
        migrations.RunPython(remove_review_permission, migrations.RunPython.noop),
    ]
