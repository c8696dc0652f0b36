"""Outbox rows and the consumers' record of processed events.

An ``OutboxEvent`` is written in the transaction of the change it describes
and published later by the relay (``exchange.outbox.relay``): it exists
exactly when the change committed. Its ``payload`` is the versioned JSON body
documented per ``event_type`` in docs/EVENTS.md; amounts are decimal strings.
``OutboxCursor`` is how far the relay got.
"""

from __future__ import annotations

import datetime
import decimal
import json
import uuid

from django.db import models
from django.db.models import Q
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Cast, Now

from django.contrib.postgres.indexes import BrinIndex

from exchange.core.horizon import TransactionIdField


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


class JSONTextField(models.JSONField):
    """A JSON value stored as PostgreSQL ``json`` (the text as written), not ``jsonb``.

    The outbox writes a payload once and reads it once, as text (the relay's
    envelope): ``json`` skips the conversion to ``jsonb``'s binary form on
    write (about 5 us of PostgreSQL CPU per matcher event) and back to text
    on read (about 3 us per event in the relay; docs/BENCHMARKS.md). The text keeps the writer's key order and spacing;
    consumers parse it. ``json`` has no operators of its own, so key lookups
    (``payload__order_id=...``) read the column as ``jsonb``: fine for the back
    office and tests, never an indexed path.
    """

    description = "JSON stored as text (PostgreSQL json)"

    def db_type(self, connection) -> str:
        return "json"

    def from_db_value(self, value, expression, connection):
        # psycopg parses ``json`` itself (Django only registers a text loader for jsonb).
        if value is None or not isinstance(value, str):
            return value
        return super().from_db_value(value, expression, connection)

    def get_transform(self, name):
        # JSONField's own get_transform makes every unknown name a key of the column as it is.
        transform = super(models.JSONField, self).get_transform(name)
        if transform is not None:
            return transform
        return lambda lhs, *args, **kwargs: KeyTransform(name, Cast(lhs, models.JSONField()), *args, **kwargs)


class OutboxEvent(models.Model):
    """One event, written in the transaction of the change it describes, and never
    changed after that unless the relay has to set it aside.

    Delivery is the relay's cursor (``OutboxCursor``): an event is published
    once the cursor passed its transaction (``txid``), and nothing is written
    to the row. Only an event the bus refused, and the later events of its
    (topic, key) that must not overtake it, carry a ``delivery`` state: the
    first one of the key is the head (RETRY, then FAILED after
    OUTBOX_MAX_ATTEMPTS refusals), the others WAITING behind it.
    """

    class Delivery(models.TextChoices):
        RETRY = "RETRY", "Retry (first of its key set aside: published at next_attempt_at)"
        FAILED = "FAILED", "Failed (refused by the bus: requeue after fixing the cause)"
        WAITING = "WAITING", "Waiting (behind a retrying or failed event of its key)"

    # gen_random_uuid() in the database: bulk emitters that build rows with
    # INSERT ... SELECT (the matcher, the ledger) need no Python per row. Unique
    # by construction (122 random bits from PostgreSQL's strong random source:
    # a collision among 10^12 events has a chance of about 10^-13), without a
    # unique index: a b-tree of random keys cost 4-6 us of PostgreSQL CPU per
    # event and a page touched at random per insert (a full-page image in the
    # WAL for each first touch after a checkpoint, and reads once the index
    # outgrows memory), and no query reads by it (the relay goes by txid and id, requeue
    # by id, and the back office's exact search compares the text, which no
    # index on the uuid serves). Consumers dedupe on it (ProcessedEvent).
    event_id = models.UUIDField(editable=False, db_default=models.Func(function="gen_random_uuid"))
    topic = models.CharField(max_length=32, choices=Topic.choices)
    key = models.CharField(max_length=64, help_text="Partition key: the market symbol or the user id.")
    event_type = models.CharField(max_length=64)
    version = models.PositiveSmallIntegerField(default=1, db_default=1)
    payload = JSONTextField(encoder=EventJSONEncoder)
    sequence = models.BigIntegerField(null=True, blank=True, help_text="The market's engine sequence, if any.")
    created_at = models.DateTimeField(db_default=Now())
    # The writing transaction: the relay publishes by transaction, in commit order (exchange.outbox.relay).
    txid = TransactionIdField()
    delivery = models.CharField(max_length=8, choices=Delivery.choices, null=True, blank=True,
                                help_text="Empty unless the relay set the event aside.")
    attempts = models.PositiveIntegerField(default=0, db_default=0, help_text="Times the bus refused the event.")
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="", db_default="")

    class Meta:
        indexes = [
            # The relay's epochs: the rows of the transactions that committed since its last snapshot.
            models.Index(fields=["txid"], name="outbox_txid_idx"),
            # Events set aside (empty while the bus works): the heads of blocked keys, and what waits behind them.
            models.Index(fields=["topic", "key"], name="outbox_head_idx",
                         condition=Q(delivery__in=["RETRY", "FAILED"])),
            models.Index(fields=["topic", "key", "id"], name="outbox_waiting_idx", condition=Q(delivery="WAITING")),
            # Pruning by age: rows are appended in time order, so a BRIN index
            # is tiny and nearly free to maintain.
            BrinIndex(fields=["created_at"], name="outbox_created_brin"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(delivery__in=["RETRY", "FAILED", "WAITING"]),
                                   name="outbox_delivery_valid"),
        ]
        permissions = [("requeue_outboxevent", "Can requeue failed outbox events")]

    def __str__(self) -> str:
        return f"{self.event_type} {self.key} #{self.pk}"


class SnapshotField(models.Field):
    """A PostgreSQL ``pg_snapshot`` (``xmin:xmax:xip,...``), as text in Python."""

    description = "PostgreSQL snapshot (pg_snapshot)"

    def db_type(self, connection) -> str:
        return "pg_snapshot"

    def from_db_value(self, value, expression, connection):
        return None if value is None else str(value)

    def get_db_prep_value(self, value, connection, prepared=False):
        return None if value is None else str(value)


class OutboxCursor(models.Model):
    """The relay's position (one row, id 1), advanced once per batch.

    ``published_snapshot``: every event written by a transaction visible in
    it has been published (or set aside). ``epoch_snapshot``, while an epoch
    is published in several batches: the events of the transactions visible
    in it and not in ``published_snapshot``, in id order, of which those up
    to ``epoch_after_id`` are published; ``epoch_last_id`` bounds their ids.
    While the bus is unavailable the relay waits until ``bus_retry_at``.
    See ``exchange.outbox.relay``.
    """

    published_snapshot = SnapshotField()
    epoch_snapshot = SnapshotField(null=True, blank=True)
    epoch_after_id = models.BigIntegerField(default=0, db_default=0)
    epoch_last_id = models.BigIntegerField(default=0, db_default=0)
    bus_attempts = models.PositiveIntegerField(default=0, db_default=0,
                                               help_text="Consecutive batches the bus did not confirm.")
    bus_retry_at = models.DateTimeField(null=True, blank=True)
    bus_error = models.TextField(blank=True, default="", db_default="")
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(id=1), name="outbox_cursor_single_row")]

    def __str__(self) -> str:
        return f"outbox cursor at {self.published_snapshot}"


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
        # Pruning by age (``outbox_prune``): appended in time order, so BRIN.
        indexes = [BrinIndex(fields=["processed_at"], name="processed_event_at_brin")]

    def __str__(self) -> str:
        return f"{self.consumer}: {self.event_id}"
