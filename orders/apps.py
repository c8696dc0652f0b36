from django.apps import AppConfig


class OrdersConfig(AppConfig):
    name = "orders"

    def ready(self):
        from orders.invariants import order_hold_check
        from orders.selectors import trading_volume_30d
        from wallet.fees import register_volume_30d_provider
        from wallet.invariants import register_hold_check

        register_hold_check("order", order_hold_check)
        register_volume_30d_provider(trading_volume_30d)
