from django.urls import path

from exchange.audit.api import views

urlpatterns = [
    path("audit-logs", views.AuditLogExportApi.as_view(), name="compliance-audit-logs"),
    path("orders", views.OrderExportApi.as_view(), name="compliance-orders"),
    path("trades", views.TradeExportApi.as_view(), name="compliance-trades"),
    path("ledger", views.LedgerExportApi.as_view(), name="compliance-ledger"),
]
