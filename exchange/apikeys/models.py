"""API keys: how bots and programs act for a user without the user's password.

A key has a public ``key_id`` and a secret the user sees once, at creation.
The secret is stored encrypted (``encryption.py``) because verifying a
request's HMAC needs it in clear. A key grants ``read`` always and
``trade``/``withdraw`` when set; it can be limited to IP addresses or
networks, can expire, and is revoked rather than deleted, so that what a key
did stays attributable.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.utils import timezone

READ = "read"
TRADE = "trade"
WITHDRAW = "withdraw"
PERMISSIONS = (READ, TRADE, WITHDRAW)


class ApiKey(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        EXPIRED = "expired", "Expired"
        REVOKED = "revoked", "Revoked"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    label = models.CharField(max_length=64)
    key_id = models.CharField(max_length=64, unique=True, help_text="Public identifier sent as X-API-KEY.")
    secret_encrypted = models.TextField(help_text="Fernet token of the secret; never shown.")
    can_trade = models.BooleanField(default=False)
    can_withdraw = models.BooleanField(default=False)
    ip_allowlist = ArrayField(
        models.CharField(max_length=43),
        default=list,
        blank=True,
        help_text="Networks in CIDR notation the key may be used from; empty means any address.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, help_text="Updated at most once a minute.")
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(condition=~Q(key_id=""), name="apikey_key_id_not_empty"),
            models.CheckConstraint(condition=~Q(secret_encrypted=""), name="apikey_secret_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.label} ({self.key_id[:8]}...)"

    @property
    def permissions(self) -> list[str]:
        granted = {READ: True, TRADE: self.can_trade, WITHDRAW: self.can_withdraw}
        return [name for name in PERMISSIONS if granted[name]]

    def has_permission(self, permission: str) -> bool:
        return permission in self.permissions

    def status_at(self, now) -> str:
        if self.revoked_at is not None:
            return self.Status.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return self.Status.EXPIRED
        return self.Status.ACTIVE

    @property
    def status(self) -> str:
        return self.status_at(timezone.now())
