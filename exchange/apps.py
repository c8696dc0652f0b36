from django.apps import AppConfig


class ExchangeConfig(AppConfig):
    name = "exchange"
    verbose_name = "Exchange"

    def ready(self):
        # Registered by import: the OpenAPI description of API key
        # authentication and the system checks of API keys.
        from exchange.apikeys import checks, schema  # noqa: F401
        from exchange.audit import signals  # noqa: F401  (LOGIN, LOGOUT, LOGIN_FAILED rows)
        from exchange.outbox import metrics

        metrics.register()  # outbox backlog, lag and totals on /metrics

        # What the order path caches per process (exchange/core/localcache.py).
        from django.contrib.auth import get_user_model

        from exchange.apikeys.models import ApiKey
        from exchange.core import localcache
        from exchange.models import Asset, Market

        localcache.watch(get_user_model(), bookkeeping_fields=frozenset({"last_login"}))
        localcache.watch(ApiKey, bookkeeping_fields=frozenset({"last_used_at"}))
        localcache.watch(Market)
        localcache.watch(Asset)
