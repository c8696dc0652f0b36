"""Risk: limits, kill switches, surveillance rules and the alerts operators work through.

Two tiers (docs/RISK.md):

- **Pre-trade** (synchronous, on the order path and in the matcher for what
  is queued): ``RiskLimit`` rows scoped global / market / KYC tier / user,
  the most specific wins per limit; ``TradingRestriction`` rows are the kill
  switches (a user frozen or cancel-only, a market halted, the exchange
  halted). Both are read through per-process caches (risk/limits.py), and
  the counters the limits compare against live in Redis (risk/counters.py).
- **Post-trade** (asynchronous, Celery, fed by the order and trade events):
  ``SurveillanceRule`` rows tune the rules per market, and each detection is a
  ``RiskAlert`` with its evidence, acknowledged, assigned and resolved in the
  back office. ``AccountLink`` and ``SurveillanceExemption`` are the
  operator's knowledge the rules use.

Every change of a limit or restriction goes through risk/services.py (one
function per kind of change, which also writes its audit row).
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.auth.models import User
from django.db import models
from django.db.models import Q

from exchange.models import FEE_RATE_DIGITS, FEE_RATE_PLACES, Market, amount_field


# ---------------------------------------------------------------- limits


class Scope(models.TextChoices):
    GLOBAL = "GLOBAL", "Global"
    MARKET = "MARKET", "Market"
    TIER = "TIER", "KYC tier"
    USER = "USER", "User"


# Most specific first: a user's own limit beats their tier's, which beats the
# market's, which beats the global one (per limit, docs/RISK.md).
SCOPE_PRECEDENCE = (Scope.USER, Scope.TIER, Scope.MARKET, Scope.GLOBAL)


class RiskLimit(models.Model):
    """The limits set at one scope; a null limit is not set here (a wider scope's applies)."""

    scope = models.CharField(max_length=6, choices=Scope.choices)
    market = models.ForeignKey(Market, null=True, blank=True, on_delete=models.PROTECT, related_name="risk_limits")
    kyc_tier = models.PositiveSmallIntegerField(null=True, blank=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                             related_name="risk_limits")

    max_open_orders = models.PositiveIntegerField(
        null=True, blank=True, help_text="Open orders at once, all markets together.")
    max_order_quantity = amount_field(
        null=True, blank=True, help_text="Base quantity of one order (in each market's base asset).")
    max_order_notional = amount_field(
        null=True, blank=True, help_text="Value of one order, in the market's quote asset.")
    max_daily_notional = amount_field(
        null=True, blank=True, help_text="Value of the orders placed today (UTC), per quote asset.")
    max_daily_orders = models.PositiveIntegerField(null=True, blank=True, help_text="Orders placed today (UTC).")
    max_position = amount_field(
        null=True, blank=True,
        help_text="Net position per base asset: bought minus sold today, plus what open orders could add.")
    max_orders_per_second = models.PositiveIntegerField(null=True, blank=True)
    price_band = models.DecimalField(
        max_digits=FEE_RATE_DIGITS, decimal_places=FEE_RATE_PLACES, null=True, blank=True,
        help_text="Limit prices within this fraction of the last trade (else the mid), e.g. 0.05 = 5%.")

    updated_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(scope=Scope.GLOBAL, market__isnull=True, kyc_tier__isnull=True, user__isnull=True)
                    | Q(scope=Scope.MARKET, market__isnull=False, kyc_tier__isnull=True, user__isnull=True)
                    | Q(scope=Scope.TIER, market__isnull=True, kyc_tier__isnull=False, user__isnull=True)
                    | Q(scope=Scope.USER, market__isnull=True, kyc_tier__isnull=True, user__isnull=False)
                ),
                name="risk_limit_scope_target",
            ),
            models.UniqueConstraint(fields=["scope"], condition=Q(scope=Scope.GLOBAL), name="risk_limit_one_global"),
            models.UniqueConstraint(fields=["market"], condition=Q(scope=Scope.MARKET), name="risk_limit_one_per_market"),
            models.UniqueConstraint(fields=["kyc_tier"], condition=Q(scope=Scope.TIER), name="risk_limit_one_per_tier"),
            models.UniqueConstraint(fields=["user"], condition=Q(scope=Scope.USER), name="risk_limit_one_per_user"),
            models.CheckConstraint(
                condition=(Q(max_order_quantity__isnull=True) | Q(max_order_quantity__gt=0))
                & (Q(max_order_notional__isnull=True) | Q(max_order_notional__gt=0))
                & (Q(max_daily_notional__isnull=True) | Q(max_daily_notional__gt=0))
                & (Q(max_position__isnull=True) | Q(max_position__gt=0))
                & (Q(price_band__isnull=True) | Q(price_band__gt=0, price_band__lt=1)),
                name="risk_limit_amounts_positive",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_scope_display()} limits" + (f" ({self.target_label})" if self.scope != Scope.GLOBAL else "")

    @property
    def target_label(self) -> str:
        if self.scope == Scope.MARKET:
            return self.market.symbol
        if self.scope == Scope.TIER:
            return f"tier {self.kyc_tier}"
        if self.scope == Scope.USER:
            return self.user.get_username()
        return "all"


# Each limit: the field, the code an order breaking it is refused with, and how its value is written.
LIMIT_FIELDS = (
    "max_open_orders", "max_order_quantity", "max_order_notional", "max_daily_notional", "max_daily_orders",
    "max_position", "max_orders_per_second", "price_band",
)
INTEGER_LIMITS = frozenset({"max_open_orders", "max_daily_orders", "max_orders_per_second"})


# ---------------------------------------------------------- kill switches


class TradingRestriction(models.Model):
    """A kill switch: on while ``lifted_at`` is null. Who set it, why and when, and the same for its lift."""

    class Kind(models.TextChoices):
        USER_FROZEN = "USER_FROZEN", "User frozen (no orders, open orders cancelled)"
        USER_CANCEL_ONLY = "USER_CANCEL_ONLY", "User cancel-only"
        MARKET_HALTED = "MARKET_HALTED", "Market halted"
        EXCHANGE_HALTED = "EXCHANGE_HALTED", "Exchange halted (every market)"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                             related_name="trading_restrictions")
    market = models.ForeignKey(Market, null=True, blank=True, on_delete=models.PROTECT,
                               related_name="trading_restrictions")
    reason = models.TextField()
    source = models.CharField(max_length=20, help_text="Where it was set: admin, command, surveillance.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    lifted_at = models.DateTimeField(null=True, blank=True)
    lifted_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                  related_name="+")
    lift_reason = models.TextField(blank=True, default="")
    lift_source = models.CharField(max_length=20, blank=True, default="")

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(kind__in=["USER_FROZEN", "USER_CANCEL_ONLY"], user__isnull=False, market__isnull=True)
                    | Q(kind="MARKET_HALTED", user__isnull=True, market__isnull=False)
                    | Q(kind="EXCHANGE_HALTED", user__isnull=True, market__isnull=True)
                ),
                name="restriction_kind_target",
            ),
            models.UniqueConstraint(fields=["kind", "user", "market"], condition=Q(lifted_at__isnull=True),
                                    nulls_distinct=False, name="restriction_one_active_per_target"),
        ]
        indexes = [models.Index(fields=["id"], condition=Q(lifted_at__isnull=True), name="restriction_active")]

    def __str__(self) -> str:
        target = self.user.get_username() if self.user_id else self.market.symbol if self.market_id else "exchange"
        state = "active" if self.lifted_at is None else "lifted"
        return f"{self.get_kind_display().split(' (')[0]}: {target} ({state})"

    @property
    def is_active(self) -> bool:
        return self.lifted_at is None


# ----------------------------------------------------------- surveillance


class AlertKind(models.TextChoices):
    WASH_TRADE = "WASH_TRADE", "Wash trade / self-dealing"
    SPOOFING = "SPOOFING", "Spoofing / layering"
    VELOCITY = "VELOCITY", "Unusual volume or velocity"
    CONCENTRATION = "CONCENTRATION", "Concentration of market volume"
    LARGE_TRADE = "LARGE_TRADE", "Large trade"
    SET_ASIDE = "SET_ASIDE", "Command set aside by the matcher"


class Severity(models.TextChoices):
    LOW = "LOW"
    MEDIUM = "MEDIUM"
    HIGH = "HIGH"


class AutoAction(models.TextChoices):
    NONE = "NONE", "Alert only"
    CANCEL_ONLY = "CANCEL_ONLY", "Alert and make the user cancel-only"
    FREEZE = "FREEZE", "Alert and freeze the user"


class SurveillanceRule(models.Model):
    """A rule's settings for one market (or, with no market, for every market without its own row).

    Which parameter means what depends on the rule (docs/RISK.md, "Surveillance"):
    ``min_notional`` (a size in the quote asset), ``window_s`` (seconds looked
    back), ``min_count`` (occurrences), ``ratio`` (a multiple or a share),
    ``max_lifetime_s`` (seconds an order lived).
    """

    market = models.ForeignKey(Market, null=True, blank=True, on_delete=models.CASCADE,
                               related_name="surveillance_rules", help_text="Empty: the default for every market.")
    kind = models.CharField(max_length=16, choices=AlertKind.choices)
    enabled = models.BooleanField(default=True)
    auto_action = models.CharField(max_length=12, choices=AutoAction.choices, default=AutoAction.NONE,
                                   help_text="A restriction applied to the user when the rule raises a new alert.")
    min_notional = amount_field(default=Decimal(0))
    window_s = models.PositiveIntegerField(default=3600)
    min_count = models.PositiveIntegerField(default=1)
    ratio = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    max_lifetime_s = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["market", "kind"], nulls_distinct=False, name="surveillance_rule_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} ({self.market.symbol if self.market_id else 'default'})"


class RiskAlert(models.Model):
    """A detection operators work through: OPEN -> ACKNOWLEDGED -> RESOLVED.

    One unresolved alert per (kind, user, market): a rule that fires again
    adds its evidence to it (``occurrences``, ``last_seen_at``) instead of
    queueing another.
    """

    class Status(models.TextChoices):
        OPEN = "OPEN"
        ACKNOWLEDGED = "ACKNOWLEDGED"
        RESOLVED = "RESOLVED"

    kind = models.CharField(max_length=16, choices=AlertKind.choices)
    severity = models.CharField(max_length=6, choices=Severity.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OPEN)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="risk_alerts")
    market = models.ForeignKey(Market, null=True, blank=True, on_delete=models.PROTECT, related_name="risk_alerts")
    counterparty = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                     related_name="+", help_text="The other account of a wash trade.")
    summary = models.CharField(max_length=300)
    evidence = models.JSONField(default=list, help_text="The trades and orders behind the alert (latest 100).")
    occurrences = models.PositiveIntegerField(default=1)
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now_add=True)
    restriction = models.ForeignKey(TradingRestriction, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="alerts", help_text="The restriction the rule applied, if any.")
    assignee = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                 related_name="assigned_risk_alerts")
    resolution_note = models.TextField(blank=True, default="")
    resolved_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                    related_name="+")
    resolved_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["kind", "user", "market"], condition=~Q(status="RESOLVED"),
                                    nulls_distinct=False, name="alert_one_unresolved_per_subject"),
        ]
        indexes = [
            models.Index(fields=["status", "-id"], name="alert_queue"),
            models.Index(fields=["user", "-id"], name="alert_user_recent"),
        ]

    def __str__(self) -> str:
        return f"alert {self.pk} {self.kind} {self.severity}"


class AccountLink(models.Model):
    """Two accounts an operator knows to belong together (same owner, same firm):
    trades between them count as self-dealing. Stored with user_a < user_b."""

    user_a = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    user_b = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    reason = models.TextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user_a", "user_b"], name="account_link_unique"),
            models.CheckConstraint(condition=Q(user_a__lt=models.F("user_b")), name="account_link_ordered"),
        ]

    def __str__(self) -> str:
        return f"link {self.user_a_id} <-> {self.user_b_id}"


class SurveillanceExemption(models.Model):
    """A user the surveillance rules skip, for one rule or (kind empty) all of
    them: e.g. the demo market maker, whose crossing trades with itself are
    deliberate. Says why and who decided."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="surveillance_exemptions")
    kind = models.CharField(max_length=16, choices=AlertKind.choices, blank=True, default="",
                            help_text="Empty: every rule.")
    reason = models.TextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "kind"], name="surveillance_exemption_unique")]

    def __str__(self) -> str:
        return f"user {self.user_id} exempt from {self.kind or 'every rule'}"


class Trader(User):
    """A user as the risk back office shows them: restrictions, limits, alerts (a proxy: no table)."""

    class Meta:
        proxy = True
        verbose_name = "trader (risk)"
        verbose_name_plural = "traders (risk)"


class MarketSwitch(Market):
    """A market as the kill-switch page shows it (a proxy: no table)."""

    class Meta:
        proxy = True
        verbose_name = "market kill switch"
        verbose_name_plural = "market kill switches"
