"""The audit trail: an append-only log, its hash chain, retention checkpoints and legal holds.

``AuditLog`` holds one row per mutation. A writer inserts content columns
only (one INSERT, from Python with ``audit_log_record`` or from SQL); the
database fills in the id, the time and the writing transaction's id
(``txid``). Rows are never updated, and deleted only by retention, below a
signed checkpoint (database triggers, migration 0007).

The hash chain lives beside the log, in ``AuditChainLink``: after commit, the
chainer (``exchange.audit.chain``) takes the rows whose transactions have all
finished (below the transaction-id horizon, see ``exchange.core.horizon``)
in (txid, id) order and appends one link per row: its chain position
``seq``, the previous link's hash and the SHA-256 of that hash and the row's
content. ``AuditChainHead`` is the chainer's cursor and the end of the chain,
HMAC-signed, so that cutting rows off the end shows. ``AuditCheckpoint``
records, signed, where retention cut the beginning of the chain.

Chaining beside the log rather than in it keeps the log strictly immutable
(no UPDATE of any row, ever) and every row written once.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from django.contrib.postgres.indexes import BrinIndex

from exchange.core.horizon import TransactionIdField
from exchange.outbox.models import EventJSONEncoder


class AppendOnlyError(Exception):
    """Raised when code tries to change or delete an audit row through the ORM."""


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only: they cannot be updated")

    def delete(self):
        raise AppendOnlyError(f"{self.model.__name__} rows are append-only: they cannot be deleted")

    _raw_delete = delete


class AppendOnlyModel(models.Model):
    """A row that is inserted once and never changed through the ORM (the database refuses it too)."""

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AppendOnlyError(f"{type(self).__name__} rows are append-only: they cannot be updated")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError(f"{type(self).__name__} rows are append-only: they cannot be deleted")


class AuditLog(AppendOnlyModel):
    """One mutation: who did what to which object, from where, and the object before and after.

    The actor is an end user (``actor_user``, with ``actor_api_key`` when the
    request was signed with a key), a staff member working in the back office
    (``actor_staff``), or a process (``actor_system``: "matcher:BTC-USDT",
    "manage.py load_demo", "custody-webhook"). ``subject_user`` is the user
    whose account the action concerns (the trader whose withdrawal an operator
    approved); it is the acting user when a user acts for themself.

    References to users and keys are not foreign keys: an audit row must
    survive whatever happens to what it mentions, and the insert stays one
    index write cheaper on the order path.
    """

    created_at = models.DateTimeField(db_default=Now())
    txid = TransactionIdField()
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64, help_text='"app_label.model", e.g. "wallet.withdrawal".')
    object_id = models.CharField(max_length=128, blank=True, default="", db_default="")
    market = models.CharField(max_length=33, blank=True, default="", db_default="")
    actor_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING,
                                   db_constraint=False, db_index=False, related_name="+")
    actor_api_key = models.ForeignKey("exchange.ApiKey", null=True, blank=True, on_delete=models.DO_NOTHING,
                                      db_constraint=False, db_index=False, related_name="+")
    actor_staff = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING,
                                    db_constraint=False, db_index=False, related_name="+")
    actor_system = models.CharField(max_length=64, blank=True, default="", db_default="")
    subject_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.DO_NOTHING,
                                     db_constraint=False, db_index=False, related_name="+")
    before = models.JSONField(null=True, blank=True, encoder=EventJSONEncoder)
    after = models.JSONField(null=True, blank=True, encoder=EventJSONEncoder)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True, default="", db_default="")
    request_id = models.CharField(max_length=64, blank=True, default="", db_default="")

    class Meta:
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"
        indexes = [
            # The chainer's cursor walks (txid, id); verify and retention too.
            models.Index(fields=["txid", "id"], name="auditlog_chain_order"),
            # Exports and retention by time: rows arrive in time order, so BRIN is tiny.
            BrinIndex(fields=["created_at"], name="auditlog_created_brin"),
            # "Everything about this user" (exports, legal holds).
            models.Index(fields=["subject_user", "id"], name="auditlog_subject_user",
                         condition=Q(subject_user__isnull=False)),
            models.Index(fields=["actor_staff", "id"], name="auditlog_actor_staff",
                         condition=Q(actor_staff__isnull=False)),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(action__regex=r"^[A-Z][A-Z0-9_]*$"), name="auditlog_action_upper_snake"),
            models.CheckConstraint(condition=~Q(object_type=""), name="auditlog_object_type_not_empty"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} {self.object_type}:{self.object_id}"

    @property
    def actor_label(self) -> str:
        """Who acted, for people: "staff:3", "user:7 (key 12)", "system:matcher:BTC-USDT"."""
        if self.actor_staff_id:
            return f"staff:{self.actor_staff_id}"
        if self.actor_user_id:
            key = f" (key {self.actor_api_key_id})" if self.actor_api_key_id else ""
            return f"user:{self.actor_user_id}{key}"
        return f"system:{self.actor_system}" if self.actor_system else "unknown"


class AuditChainLink(AppendOnlyModel):
    """A row's place in the hash chain: ``hash = SHA-256(prev_hash || content of the row at seq)``."""

    seq = models.BigIntegerField(primary_key=True, help_text="Chain position, 1, 2, 3... with no gap.")
    log_id = models.BigIntegerField(unique=True, help_text="The AuditLog row (not a foreign key: verify reports a "
                                                           "deleted row instead of the database hiding it).")
    prev_hash = models.BinaryField(max_length=32)
    hash = models.BinaryField(max_length=32)
    chained_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"link {self.seq} -> row {self.log_id}"


class AuditChainHead(models.Model):
    """The end of the chain (one row, id 1): the chainer's cursor, HMAC-signed.

    ``(txid, log_id)`` is the last chained row's position in chain order;
    ``signature`` covers seq, txid, log_id and hash, so moving the head back
    over deleted rows needs the signing key (AUDIT_SIGNING_KEY).
    """

    seq = models.BigIntegerField(default=0)
    txid = models.BigIntegerField(default=0)
    log_id = models.BigIntegerField(default=0)
    hash = models.BinaryField(max_length=32)
    signature = models.CharField(max_length=64, blank=True, default="")
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(id=1), name="auditchainhead_single_row")]

    def __str__(self) -> str:
        return f"chain head at {self.seq}"


class AuditCheckpoint(AppendOnlyModel):
    """Where retention cut the chain: every link up to ``seq`` (and its row) may be deleted.

    ``hash`` is the hash of link ``seq``: the first link kept must name it as
    its ``prev_hash``. Signed like the head.
    """

    seq = models.BigIntegerField(unique=True)
    txid = models.BigIntegerField()
    log_id = models.BigIntegerField()
    hash = models.BinaryField(max_length=32)
    signature = models.CharField(max_length=64)
    cutoff = models.DateTimeField(help_text="Rows created before this were past their retention period.")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-seq"]

    def __str__(self) -> str:
        return f"checkpoint at {self.seq}"


class LegalHold(models.Model):
    """Data the retention task must keep whatever its age: a user's, a period's, or a user's in a period.

    Active until released (``released_at``); released holds stay as a record.
    A hold on a user covers audit rows where they act or are the subject,
    their orders and the trades they took part in; a period covers rows
    created (orders: alive, trades: executed) in it.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                             related_name="legal_holds")
    starts_at = models.DateTimeField(null=True, blank=True, help_text="Empty: from the beginning.")
    ends_at = models.DateTimeField(null=True, blank=True, help_text="Empty: until now and on.")
    reason = models.TextField(help_text="The case or request it serves.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    created_at = models.DateTimeField(db_default=Now())
    released_at = models.DateTimeField(null=True, blank=True)
    released_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                    related_name="+")
    release_reason = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False) | Q(starts_at__isnull=False) | Q(ends_at__isnull=False),
                name="legalhold_user_or_period"),
            models.CheckConstraint(
                condition=Q(starts_at__isnull=True) | Q(ends_at__isnull=True) | Q(starts_at__lt=models.F("ends_at")),
                name="legalhold_period_ordered"),
        ]

    def __str__(self) -> str:
        who = f"user {self.user_id}" if self.user_id else "everyone"
        start = self.starts_at.date() if self.starts_at else "..."
        end = self.ends_at.date() if self.ends_at else "..."
        return f"hold #{self.pk}: {who}, {start} to {end}{' (released)' if self.released_at else ''}"
