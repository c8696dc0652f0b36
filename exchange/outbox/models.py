"""Outbox rows and the consumers' record of processed events.

An ``OutboxEvent`` is written in the transaction of the change it describes
and published later by the relay (``exchange.outbox.relay``): it exists
exactly when the change committed. Its ``payload`` is the versioned JSON body
documented per ``event_type`` in docs/EVENTS.md; amounts are decimal strings.
"""

from __future__ import annotations

import datetime
import decimal
import json
import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from django.contrib.postgres.indexes import BrinIndex


class Topic(models.TextChoices):
    ORDERS = "order.events", "order.events"
    TRADES = "trade.events", "trade.events"
    BALANCES = "balance.events", "balance.events"
    MARKETS = "market.events", "market.events"
    AUDIT = "audit.logs", "audit.logs"


class EventJSONEncoder(json.JSONEncoder):
    """Decimals as exact strings ('0.01', never a float), datetimes in ISO 8601, UUIDs as text."""

    def default(self, value):
        if isinstance(value, decimal.Decimal):
            from exchange.core.fields import decimal_to_str

            return decimal_to_str(value)
        if isinstance(value, datetime.datetime):
            return value.isoformat()
        if isinstance(value, (uuid.UUID, datetime.date)):
            return str(value)
        return super().default(value)


class OutboxEvent(models.Model):
    class Status(models.TextChoices):
        PENDING = "PENDING", "Pending"
        PUBLISHED = "PUBLISHED", "Published"
        FAILED = "FAILED", "Failed (requeue after fixing the cause)"

    # gen_random_uuid() in the database: bulk emitters that build rows with
    # INSERT ... SELECT (the matcher, the ledger) need no Python per row.
    event_id = models.UUIDField(unique=True, editable=False, db_default=models.Func(function="gen_random_uuid"))
    topic = models.CharField(max_length=32, choices=Topic.choices)
    key = models.CharField(max_length=64, help_text="Partition key: the market symbol or the user id.")
    event_type = models.CharField(max_length=64)
    version = models.PositiveSmallIntegerField(default=1, db_default=1)
    payload = models.JSONField(encoder=EventJSONEncoder)
    sequence = models.BigIntegerField(null=True, blank=True, help_text="The market's engine sequence, if any.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_default="PENDING")
    attempts = models.PositiveIntegerField(default=0, db_default=0, help_text="Failed publish attempts.")
    next_attempt_at = models.DateTimeField(db_default=Now())
    last_error = models.TextField(blank=True, default="", db_default="")
    created_at = models.DateTimeField(db_default=Now())
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The relay's scan: pending rows in id order (published rows leave it).
            models.Index(fields=["id"], name="outbox_unpublished_idx",
                         condition=Q(status__in=["PENDING", "FAILED"])),
            # Rows that failed at least once and may block their key: empty
            # while the bus works, so the relay's search for them is free.
            models.Index(fields=["topic", "key", "id"], name="outbox_retrying_idx",
                         condition=Q(attempts__gt=0, status__in=["PENDING", "FAILED"])),
            # Pruning by age: rows are appended in time order, so a BRIN index
            # is tiny and nearly free to maintain.
            BrinIndex(fields=["created_at"], name="outbox_created_brin"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["PENDING", "PUBLISHED", "FAILED"]),
                                   name="outbox_status_valid"),
        ]
        permissions = [("requeue_outboxevent", "Can requeue failed outbox events")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.key} #{self.pk}"


class ProcessedEvent(models.Model):
    """An event a named consumer has handled: inserted in the handler's own
    transaction, so a redelivered event is skipped exactly when its effect
    committed (see ``exchange.outbox.consumer``)."""

    consumer = models.CharField(max_length=64)
    event_id = models.UUIDField()
    processed_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["consumer", "event_id"], name="processed_event_once_per_consumer"),
        ]

    def __str__(self) -> str:
        return f"{self.consumer}: {self.event_id}"
