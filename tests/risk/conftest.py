"""Fixtures for risk: the orders fixtures (a market, funded traders, an in-process matcher),
clean per-process caches, and helpers to place orders and run the event consumer.

Tests commit for real (``transactional_db``): the pre-trade check reads its
limits and restrictions through the per-process caches (emptied before each
test by tests/conftest.py), the counters live in the real Redis, and the
consumer reads the events the relay published to the Redis-stream bus, as in
production.
"""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from exchange.outbox.bus import reset_bus
from exchange.outbox.relay import outbox_relay
from matching import stream
from orders.rules import OrderRequest
from orders.services import order_place
from tests.matching.conftest import drain, fund, market, matcher, traders  # noqa: F401 (fixtures and helpers)
from tests.orders.conftest import heartbeat, sound_ledger  # noqa: F401


@pytest.fixture
def live_market(market, redis_app):
    """The market with a fresh matcher heartbeat (order entry needs one) and a last price of 100."""
    stream.heartbeat_write(market.symbol, sequence=0, pid=0, backlog=0, last_price="100")
    return market


def place(user, side: str = "BUY", order_type: str = "LIMIT", *, symbol: str = "BTC-USDT", client_ip=None,
          **fields):
    """order_place with amounts given as text or numbers; returns the order."""
    amounts = {name: D(str(value)) for name, value in fields.items()
               if name in ("price", "quantity", "quote_quantity", "stop_price") and value is not None}
    others = {name: value for name, value in fields.items() if name not in amounts}
    order, _ = order_place(user=user, symbol=symbol, request=OrderRequest(side=side, type=order_type, **amounts,
                                                                          **others),
                           audit={"actor_user": user, "ip": client_ip} if client_ip else None)
    return order


@pytest.fixture
def celery_worker(transactional_db):
    """A real Celery worker (in a thread of this process) consuming the ``risk`` queue from the
    Redis broker; ``run_task(task)`` sends a task through the broker and waits for it."""
    from celery.contrib.testing.worker import start_worker

    from exchange.celery import app

    app.conf.task_always_eager = False
    with start_worker(app, pool="solo", queues=["risk"], perform_ping_check=False, shutdown_timeout=30):
        yield app


def run_task(task, timeout_s: float = 60.0):
    """Send ``task`` to the ``risk`` queue and wait until the worker has run it; returns its result."""
    import threading
    import uuid

    from celery.signals import task_postrun

    done = threading.Event()
    outcome = {}
    sent = {}

    def finished(task_id=None, retval=None, state=None, **kwargs):
        if task_id == sent.get("id"):
            outcome.update(state=state, retval=retval)
            done.set()

    sent["id"] = uuid.uuid4().hex
    task_postrun.connect(finished, weak=False)
    try:
        task.apply_async(queue="risk", task_id=sent["id"])
        assert done.wait(timeout_s), f"{task.name} did not run within {timeout_s} s"
    finally:
        task_postrun.disconnect(finished)
    assert outcome["state"] == "SUCCESS", outcome
    return outcome["retval"]


def publish_and_consume() -> int:
    """Relay the outbox to the Redis-stream bus, then run the risk consumer once."""
    from risk.consumer import consume

    reset_bus()
    outbox_relay()
    return consume()
