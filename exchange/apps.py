from django.apps import AppConfig


class ExchangeConfig(AppConfig):
    name = "exchange"
    verbose_name = "Exchange"

    def ready(self):
        # Registered by import: the OpenAPI description of API key
        # authentication, system checks (API keys, /metrics, default passwords,
        # autovacuum) and signal receivers (a sign-out closes the session's live
        # connections).
        from exchange import health  # noqa: F401
        from exchange.accounts import passwords  # noqa: F401
        from exchange.accounts import signals as account_signals  # noqa: F401
        from exchange.apikeys import checks, schema  # noqa: F401
        from exchange.audit import signals  # noqa: F401  (LOGIN, LOGOUT, LOGIN_FAILED rows)
        from exchange.core import vacuum  # noqa: F401
        from exchange.outbox import metrics

        metrics.register()  # outbox backlog, lag and totals on /metrics

        # The roles follow the permissions of models added by later migrations (exchange/roles.py).
        from django.db.models.signals import post_migrate

        from exchange.roles import roles_sync_after_migrate

        post_migrate.connect(roles_sync_after_migrate, sender=self, dispatch_uid="exchange.roles_sync")

        # What the order path caches per process (exchange/core/localcache.py).
        from django.contrib.auth import get_user_model

        from exchange.apikeys.models import ApiKey
        from exchange.core import localcache
        from exchange.models import Asset, Market

        localcache.watch(get_user_model(), bookkeeping_fields=frozenset({"last_login"}))
        localcache.watch(ApiKey, bookkeeping_fields=frozenset({"last_used_at"}))
        localcache.watch(Market)
        localcache.watch(Asset)
