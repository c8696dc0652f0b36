from django.contrib import admin

from exchange.core.admin import ReadOnlyAdmin
from orders.models import Order, OrderAmendment, Trade

# Orders and trades are written by the order services and the matchers only.


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ("id", "market", "user", "side", "type", "price", "quantity", "filled_quantity", "status",
                    "created_at")
    list_filter = ("market", "status", "side", "type")
    search_fields = ("=id", "client_order_id", "user__username")
    list_select_related = ("market", "user")
    show_full_result_count = False


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdmin):
    list_display = ("market", "sequence", "price", "quantity", "taker_side", "maker_user", "taker_user", "executed_at")
    list_filter = ("market",)
    search_fields = ("=sequence", "maker_user__username", "taker_user__username")
    list_select_related = ("market", "maker_user", "taker_user")
    show_full_result_count = False


@admin.register(OrderAmendment)
class OrderAmendmentAdmin(ReadOnlyAdmin):
    list_display = ("id", "order", "new_price", "new_quantity", "status", "reject_reason", "created_at")
    list_filter = ("status",)
