from django.contrib import admin

from matching.models import MarketState, MarketStatusChange
from exchange.core.admin import ReadOnlyAdmin


@admin.register(MarketState)
class MarketStateAdmin(ReadOnlyAdmin):
    list_display = ("market", "last_sequence", "last_price", "updated_at")


@admin.register(MarketStatusChange)
class MarketStatusChangeAdmin(ReadOnlyAdmin):
    list_display = ("market", "previous_status", "new_status", "status", "requested_by", "reason", "created_at",
                    "applied_at")
    list_filter = ("market", "status")
