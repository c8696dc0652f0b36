"""What a market's matcher persists besides orders and trades.

``MarketState`` is written in the same transaction as every batch of engine
events: ``last_sequence`` is the sequence of the last engine event applied,
the book's counter after a rebuild, and ``last_price`` the last trade price
(the reference for price bands and market-order funds).

``MarketStatusChange`` is an operator's request to halt, resume, or restrict
a market. It goes through the market's command stream like any order command,
so it is sequenced with matching; the matcher applies it and marks it APPLIED.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from exchange.models import Market, amount_field


class MarketState(models.Model):
    market = models.OneToOneField(Market, on_delete=models.PROTECT, primary_key=True, related_name="state")
    last_sequence = models.BigIntegerField(default=0)
    last_price = amount_field(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.market_id} @ {self.last_sequence}"


class MarketStatusChange(models.Model):
    class Status(models.TextChoices):
        REQUESTED = "REQUESTED"
        APPLIED = "APPLIED"
        REJECTED = "REJECTED"

    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="status_changes")
    new_status = models.CharField(max_length=16, choices=Market.Status.choices)
    previous_status = models.CharField(max_length=16, choices=Market.Status.choices, blank=True, default="")
    reason = models.TextField()
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.REQUESTED)
    sequence = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["market", "id"], name="status_change_requested", condition=Q(status="REQUESTED"))]

    def __str__(self) -> str:
        return f"{self.market_id} -> {self.new_status} ({self.status})"
