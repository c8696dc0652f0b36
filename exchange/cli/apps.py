from django.apps import AppConfig


class CliConfig(AppConfig):
    """Commands that replace Django's own of the same name (``createsuperuser``). Django runs
    the command of the first installed app that has one, so this app is listed before
    django.contrib.auth; it has no models."""

    name = "exchange.cli"
    label = "exchange_cli"
