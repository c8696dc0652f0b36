from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from exchange import health
from exchange.trading_page import trading_page

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("api/v1/", include("exchange.api.urls")),
    path("api/v1/", include("orders.api.urls")),
    path("api/v1/auth/", include("exchange.accounts.api.urls")),
    path("api/v1/", include("exchange.apikeys.api.urls")),
    path("api/v1/", include("wallet.api.urls")),
    path("api/v1/", include("risk.api.urls")),
    path("api/v1/compliance/", include("exchange.audit.api.urls")),
    path("health", health.health, name="health"),
    path("health/live", health.health_live, name="health-live"),
    path("health/ready", health.health_ready, name="health-ready"),
    path("", trading_page, name="trading-home"),
    path("trade/<str:symbol>/", trading_page, name="trading-market"),
    path("metrics", health.metrics, name="prometheus-django-metrics"),
]

handler404 = "exchange.core.errors.json_not_found"
handler500 = "exchange.core.errors.json_server_error"
