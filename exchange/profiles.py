"""A user's profile: what the platform knows about a user beyond the login.

Today only the KYC tier, which selects the tier-scoped risk limits
(risk/limits.py). The row is created lazily: a user without one is tier 0.
It is edited in the back office on the user's risk page (risk/admin.py).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models


class UserProfile(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True,
                                related_name="profile")
    kyc_tier = models.PositiveSmallIntegerField(
        default=0, help_text="Identity verification level (0: none). Risk limits may be set per tier.")
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"profile of user {self.user_id} (tier {self.kyc_tier})"


def kyc_tier_of(user_id: int) -> int:
    """The user's KYC tier: 0 without a profile row. Read from the database; the
    order path reads it through risk.limits.kyc_tier (cached per process)."""
    tier = UserProfile.objects.filter(user_id=user_id).values_list("kyc_tier", flat=True).first()
    return tier or 0
