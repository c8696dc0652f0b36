"""Celery tasks of risk, routed to the ``risk`` queue (CELERY_TASK_ROUTES).

- ``risk_events_consume`` (beat, every RISK_CONSUME_INTERVAL_S): the event
  consumer (risk/consumer.py): open-order and position counters, and the
  per-event surveillance rules. One pass at a time (a Redis lock).
- ``risk_surveillance_windows`` (beat, every RISK_WINDOWS_INTERVAL_S): the
  windowed rules, velocity and concentration, over every market.
- ``risk_reservations_reconcile`` (beat, every RISK_RECONCILE_INTERVAL_S):
  rebuilds the counters of users holding a reservation that no open order
  has backed for a minute (``counters.reservations_reconcile``).
"""

from __future__ import annotations

from celery import shared_task


@shared_task(name="risk.tasks.risk_events_consume", ignore_result=True)
def risk_events_consume() -> int:
    from risk.consumer import consume

    return consume()


@shared_task(name="risk.tasks.risk_surveillance_windows", ignore_result=True)
def risk_surveillance_windows() -> int:
    from exchange.models import Market
    from risk.surveillance import windows_check

    return windows_check(market_ids=list(Market.objects.values_list("id", flat=True)))


@shared_task(name="risk.tasks.risk_reservations_reconcile", ignore_result=True)
def risk_reservations_reconcile() -> int:
    from risk.counters import reservations_reconcile

    return len(reservations_reconcile())
