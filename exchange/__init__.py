"""The exchange project package and the platform core (assets, markets, health, runtime)."""

from exchange.celery import app as celery_app

__all__ = ["celery_app"]
