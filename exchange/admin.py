from django.contrib import admin

from exchange.admin_actions import reason_action
from exchange.audit.admin import AuditedModelAdmin
from exchange.backoffice.display import NormalizedDecimalsForm, amount_column, places
from exchange.branding import Branding, branding_save
from exchange.models import Asset, Market
from exchange.outbox.services import market_changed_emit
from matching.services import market_status_request


@admin.register(Asset)
class AssetAdmin(AuditedModelAdmin):
    audit_prefix = "ASSET"
    list_display = ("code", "name", "precision", "created_at")
    search_fields = ("code", "name")

    def get_readonly_fields(self, request, obj=None):
        # Changing an asset's precision under existing balances would
        # reinterpret every amount already in the ledger.
        return ("code", "precision") if obj else ()


def _normalized(field: str):
    """A column of a market's size or rate without trailing zeros."""
    return amount_column(field, lambda market: places(getattr(market, field)))


# Market status actions: (status, title).
STATUS_ACTIONS = (
    (Market.Status.HALTED, "Halt trading"),
    (Market.Status.TRADING, "Resume trading"),
    (Market.Status.CANCEL_ONLY, "Cancel only"),
    (Market.Status.POST_ONLY, "Post only"),
)


@admin.register(Market)
class MarketAdmin(AuditedModelAdmin):
    audit_prefix = "MARKET"
    form = NormalizedDecimalsForm
    list_display = (
        "symbol",
        "status",
        *(_normalized(field) for field in ("tick_size", "step_size", "min_quantity", "max_quantity", "min_notional",
                                           "maker_fee_rate", "taker_fee_rate")),
    )
    list_filter = ("status", "quote")
    search_fields = ("symbol",)
    actions = [
        reason_action(
            name=f"set_{status.lower()}",
            title=title,
            description=f"The markets' matchers will switch them to {status} in sequence with their orders.",
            permission="change",
            apply=lambda market, actor, reason, audit, status=status: market_status_request(
                market=market, new_status=status, actor=actor, reason=reason, audit=audit),
        )
        for status, title in STATUS_ACTIONS
    ]

    def audit_market(self, market) -> str:
        return market.symbol

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        # In the admin's transaction: the market's new terms reach the bus exactly when they commit.
        market_changed_emit(market=obj, created=not change, changed_fields=form.changed_data, actor=request.user)

    def get_readonly_fields(self, request, obj=None):
        # Resting orders are stored in ticks and lots of these sizes, and the
        # status changes only through the matcher (the actions above).
        return ("symbol", "base", "quote", "tick_size", "step_size", "status") if obj else ("status",)


@admin.register(Branding)
class BrandingAdmin(AuditedModelAdmin):
    """Operators edit the branding (change permission); compliance and support only view it."""

    audit_prefix = "BRANDING"

    list_display = ("operator_name", "short_name", "is_active", "primary_colour", "accent_colour", "updated_at")
    readonly_fields = ("updated_at",)
    fieldsets = (
        (None, {"fields": ("operator_name", "short_name", "logo_url", "is_active")}),
        ("Colours (#rrggbb)", {"fields": ("primary_colour", "accent_colour", "background_colour")}),
        ("Contact and footer", {"fields": ("support_email", "footer_text", "updated_at")}),
    )

    def save_model(self, request, obj, form, change):
        branding_save(branding=obj)


import exchange.accounts.admin  # noqa: E402,F401  (audited user and role pages)
import exchange.apikeys.admin  # noqa: E402,F401  (registers ApiKeyAdmin)
import exchange.outbox.admin  # noqa: E402,F401  (registers OutboxEventAdmin)
