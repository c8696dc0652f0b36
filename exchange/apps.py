from django.apps import AppConfig


class ExchangeConfig(AppConfig):
    name = "exchange"
    verbose_name = "Exchange"

    def ready(self):
        # Registered by import: the OpenAPI description of API key
        # authentication and the system checks of API keys.
        from exchange.apikeys import checks, schema  # noqa: F401
        from exchange.outbox import metrics

        metrics.register()  # outbox backlog, lag and totals on /metrics
