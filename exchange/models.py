"""Assets and markets: what can be held and what can be traded.

A market's prices are whole multiples of its ``tick_size`` and its
quantities whole multiples of its ``step_size``; the engine works in those
integers (ticks, lots). ``clean()`` also requires that one tick times one lot
is a whole number of the quote asset's smallest unit, so every trade's
notional (ticks x lots) is exact in the ledger and no rounding is needed to
settle it.
"""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q

AMOUNT_DIGITS = 38
AMOUNT_PLACES = 18
FEE_RATE_DIGITS = 8
FEE_RATE_PLACES = 6


def amount_field(**kwargs) -> models.DecimalField:
    """Decimal wide enough for any balance, price or quantity of any asset."""
    return models.DecimalField(max_digits=AMOUNT_DIGITS, decimal_places=AMOUNT_PLACES, **kwargs)


def is_multiple(value: Decimal, unit: Decimal) -> bool:
    return unit > 0 and (value % unit) == 0


class Asset(models.Model):
    code = models.CharField(
        max_length=16,
        unique=True,
        validators=[RegexValidator(r"^[A-Z0-9]{2,16}$", "Use 2-16 upper-case letters or digits.")],
    )
    name = models.CharField(max_length=64)
    precision = models.PositiveSmallIntegerField(
        help_text="Decimal places of the smallest unit the ledger holds (8 means 0.00000001).",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(condition=Q(precision__lte=AMOUNT_PLACES), name="asset_precision_fits_ledger"),
        ]

    def __str__(self) -> str:
        return self.code

    @property
    def unit(self) -> Decimal:
        """The smallest amount of this asset, e.g. Decimal('0.00000001')."""
        return Decimal(1).scaleb(-self.precision)


class Market(models.Model):
    class Status(models.TextChoices):
        TRADING = "TRADING", "Trading"
        HALTED = "HALTED", "Halted (no orders, no cancels)"
        CANCEL_ONLY = "CANCEL_ONLY", "Cancel only"
        POST_ONLY = "POST_ONLY", "Post only (no taking)"

    symbol = models.CharField(
        max_length=33,
        unique=True,
        validators=[RegexValidator(r"^[A-Z0-9]{2,16}-[A-Z0-9]{2,16}$", "Use BASE-QUOTE, e.g. BTC-USDT.")],
    )
    base = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="base_markets")
    quote = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="quote_markets")
    tick_size = amount_field(help_text="Price increment, in quote per base.")
    step_size = amount_field(help_text="Quantity increment, in base.")
    min_quantity = amount_field()
    max_quantity = amount_field()
    min_notional = amount_field(default=Decimal(0), help_text="Minimum price x quantity, in quote.")
    maker_fee_rate = models.DecimalField(
        max_digits=FEE_RATE_DIGITS,
        decimal_places=FEE_RATE_PLACES,
        default=Decimal("0.001"),
        validators=[MinValueValidator(Decimal(0))],
        help_text="Fraction of the received amount, e.g. 0.001 = 0.1%.",
    )
    taker_fee_rate = models.DecimalField(
        max_digits=FEE_RATE_DIGITS,
        decimal_places=FEE_RATE_PLACES,
        default=Decimal("0.001"),
        validators=[MinValueValidator(Decimal(0))],
    )
    price_band = models.DecimalField(
        max_digits=FEE_RATE_DIGITS,
        decimal_places=FEE_RATE_PLACES,
        default=Decimal("0.1"),
        help_text="Limit prices must lie within last price x (1 +/- band); also caps market-order funds.",
    )
    stp_default = models.CharField(
        max_length=12,
        choices=[(mode, mode) for mode in ("NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH")],
        default="EXPIRE_TAKER",
        help_text="Self-trade prevention for orders that do not choose one.",
    )
    # Changed only by the market's matcher, which applies status changes in
    # sequence with matching (see matching.models.MarketStatusChange).
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.TRADING)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["symbol"]
        constraints = [
            models.CheckConstraint(condition=~Q(base=F("quote")), name="market_base_differs_from_quote"),
            models.CheckConstraint(condition=Q(tick_size__gt=0), name="market_tick_size_positive"),
            models.CheckConstraint(condition=Q(step_size__gt=0), name="market_step_size_positive"),
            models.CheckConstraint(condition=Q(min_quantity__gt=0), name="market_min_quantity_positive"),
            models.CheckConstraint(condition=Q(max_quantity__gte=F("min_quantity")), name="market_max_quantity_gte_min"),
            models.CheckConstraint(condition=Q(min_notional__gte=0), name="market_min_notional_not_negative"),
            models.CheckConstraint(
                condition=Q(maker_fee_rate__gte=0, maker_fee_rate__lt=1, taker_fee_rate__gte=0, taker_fee_rate__lt=1),
                name="market_fee_rates_in_range",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["TRADING", "HALTED", "CANCEL_ONLY", "POST_ONLY"]), name="market_status_valid"
            ),
            models.CheckConstraint(condition=Q(price_band__gt=0, price_band__lt=1), name="market_price_band_in_range"),
        ]

    def __str__(self) -> str:
        return self.symbol

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.base_id and self.quote_id:
            expected = f"{self.base.code}-{self.quote.code}"
            if self.symbol != expected:
                errors["symbol"] = f"The symbol of this market must be {expected}."
            if self.step_size and not is_multiple(self.step_size, self.base.unit):
                errors["step_size"] = f"Must be a multiple of {self.base.code}'s unit {self.base.unit}."
            if self.tick_size and self.step_size and not is_multiple(self.tick_size * self.step_size, self.quote.unit):
                errors["tick_size"] = (
                    f"tick_size x step_size must be a multiple of {self.quote.code}'s unit {self.quote.unit}, "
                    "so that every trade's notional is exact."
                )
        for name in ("min_quantity", "max_quantity"):
            value = getattr(self, name)
            if value and self.step_size and not is_multiple(value, self.step_size):
                errors[name] = "Must be a multiple of step_size."
        if errors:
            raise ValidationError(errors)


# Models kept in packages of this app register through this module.
from exchange.apikeys.models import ApiKey  # noqa: E402,F401
from exchange.branding import Branding  # noqa: E402,F401
from exchange.outbox.models import OutboxCursor, OutboxEvent, ProcessedEvent  # noqa: E402,F401
from exchange.profiles import UserProfile  # noqa: E402,F401
from exchange.audit.models import (  # noqa: E402,F401
    AuditChainHead, AuditChainLink, AuditCheckpoint, AuditLog, LegalHold,
)
