"""Back office of orders and trades: read-only (the order services and the matchers write them),
amounts at the market's precision, and one bulk action: cancel the selected orders.

Cancelling goes through ``orders.services.order_cancel`` for each order's owner, with the staff
member's ``audit_context``: the CANCEL_ORDER audit row names the staff member who asked.
"Cancelling" is the only change staff make to an order, so it is the ``orders.change_order``
permission (Operators and Support).
"""

from django.contrib import admin, messages

from exchange.audit.services import audit_context
from exchange.backoffice.display import amount_column, quote_places, step_places, tick_places
from exchange.core.admin import ReadOnlyAdmin
from exchange.core.errors import ApplicationError
from orders.models import OPEN_STATUSES, Order, OrderAmendment, Trade
from orders.services import order_cancel

# Orders and trades are written by the order services and the matchers only.

PRICE = amount_column("price", tick_places)
QUANTITY = amount_column("quantity", step_places)


def _base_places(obj) -> int:
    return obj.market.base.precision


def _paid_places(order) -> int:
    """A buy holds quote, a sell base."""
    return order.market.quote.precision if order.side == "BUY" else order.market.base.precision


def _received_places(order) -> int:
    """A buy receives base (its fees too), a sell quote."""
    return order.market.base.precision if order.side == "BUY" else order.market.quote.precision


_ORDER_PLACES = {"price": tick_places, "stop_price": tick_places, "quantity": step_places,
                 "filled_quantity": step_places, "quote_quantity": quote_places, "filled_notional": quote_places,
                 "hold_amount": _paid_places, "fee_total": _received_places}
# The detail page: every field, amounts at their precision (built once: the admin compares these callables).
ORDER_FIELDS = [amount_column(f.name, _ORDER_PLACES[f.name]) if f.name in _ORDER_PLACES else f.name
                for f in Order._meta.fields]


def _maker_fee_places(trade) -> int:
    """The maker receives base when the taker sells."""
    return _base_places(trade) if trade.taker_side == "SELL" else quote_places(trade)


def _taker_fee_places(trade) -> int:
    return _base_places(trade) if trade.taker_side == "BUY" else quote_places(trade)


_TRADE_PLACES = {"price": tick_places, "quantity": step_places, "notional": quote_places,
                 "maker_fee": _maker_fee_places, "taker_fee": _taker_fee_places}
TRADE_FIELDS = [amount_column(f.name, _TRADE_PLACES[f.name]) if f.name in _TRADE_PLACES else f.name
                for f in Trade._meta.fields]


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = ("id", "market", "user", "side", "type", PRICE, QUANTITY,
                    amount_column("filled_quantity", step_places, description="filled"), "status", "created_at")
    list_filter = ("market", "status", "side", "type", "time_in_force")
    search_fields = ("=id", "client_order_id", "user__username")
    list_select_related = ("market__base", "market__quote", "user")
    show_full_result_count = False
    actions = ["cancel_selected"]

    fields = ORDER_FIELDS
    readonly_fields = ORDER_FIELDS

    def has_cancel_permission(self, request):
        return request.user.has_perm("orders.change_order")

    @admin.action(description="Cancel selected orders", permissions=["cancel"])
    def cancel_selected(self, request, queryset):
        audit = audit_context(request)
        asked, failed = 0, []
        for order in queryset.filter(status__in=OPEN_STATUSES).select_related("user").order_by("id"):
            try:
                order_cancel(user=order.user, order_id=order.pk, audit=audit)
                asked += 1
            except ApplicationError as error:
                failed.append(f"{order.pk}: {error.message}")
        self.message_user(request, f"Cancel requested for {asked} open order(s); the matchers apply it in "
                                   f"sequence.", messages.SUCCESS)
        for failure in failed:
            self.message_user(request, f"Not cancelled: {failure}", messages.ERROR)


@admin.register(Trade)
class TradeAdmin(ReadOnlyAdmin):
    list_display = ("market", "sequence", amount_column("price", tick_places), amount_column("quantity", step_places),
                    amount_column("notional", quote_places), "taker_side", "maker_user", "taker_user", "executed_at")
    list_filter = ("market", "taker_side", "executed_at")
    search_fields = ("=sequence", "maker_user__username", "taker_user__username")
    list_select_related = ("market__base", "market__quote", "maker_user", "taker_user")
    show_full_result_count = False

    fields = TRADE_FIELDS
    readonly_fields = TRADE_FIELDS


@admin.register(OrderAmendment)
class OrderAmendmentAdmin(ReadOnlyAdmin):
    list_display = ("id", "order", amount_column("new_price", lambda a: tick_places(a.order), description="new price"),
                    amount_column("new_quantity", lambda a: step_places(a.order), description="new quantity"),
                    "status", "reject_reason", "created_at")
    list_filter = ("status",)
    list_select_related = ("order__market",)
    search_fields = ("=order__id",)
