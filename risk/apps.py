from django.apps import AppConfig


class RiskConfig(AppConfig):
    name = "risk"
    verbose_name = "Risk"

    def ready(self):
        from exchange.core import localcache
        from exchange.profiles import UserProfile
        from risk import metrics
        from risk.models import AccountLink, RiskLimit, SurveillanceExemption, SurveillanceRule, TradingRestriction

        # What the pre-trade check and the surveillance rules cache per process (risk/limits.py,
        # risk/surveillance.py): any change drops the caches everywhere.
        for model in (RiskLimit, TradingRestriction, UserProfile, AccountLink, SurveillanceExemption, SurveillanceRule):
            localcache.watch(model)
        metrics.register()  # refusals, alerts and kill switches on /metrics
