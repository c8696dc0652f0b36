from django.apps import AppConfig


class WalletConfig(AppConfig):
    name = "wallet"

    def ready(self):
        # Fee rates are cached per process by the order path (exchange/core/localcache.py).
        from exchange.core import localcache
        from wallet.models import FeeOverride, FeeTier

        localcache.watch(FeeOverride)
        localcache.watch(FeeTier)
