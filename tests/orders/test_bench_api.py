"""bench_api starts timing only once the stack has done what the untimed part set going."""

from __future__ import annotations

from django.db import transaction

from exchange.outbox.bus import RedisStreamBus, reset_bus, stream_name
from exchange.outbox.models import Topic
from exchange.outbox.relay import outbox_relay
from exchange.outbox.services import Event, outbox_emit_many
from matching import stream
from orders.management.commands.bench_api import stack_backlog


def test_the_backlog_names_unpublished_events_and_what_each_consumer_group_has_not_acknowledged(
        redis_app, transactional_db):
    reset_bus()
    commands = stream.stream_key("BTC-USDT")
    redis_app.xgroup_create(commands, stream.GROUP, id="0", mkstream=True)
    redis_app.xgroup_create(stream_name(Topic.ORDERS), "risk", id="0", mkstream=True)
    assert stack_backlog() == {}

    with transaction.atomic():
        outbox_emit_many([Event(Topic.ORDERS, "BTC-USDT", "test.event", {"n": n}) for n in range(3)])
    redis_app.xadd(commands, {"command": "x"})
    assert stack_backlog() == {"outbox": 3, f"matcher on {commands}": 1}

    outbox_relay(bus=RedisStreamBus())
    # The risk group has read none of the three: it is behind, by at least one.
    assert stack_backlog() == {f"matcher on {commands}": 1, f"risk on {stream_name(Topic.ORDERS)}": 1}

    [(_, read)] = redis_app.xreadgroup("risk", "r1", {stream_name(Topic.ORDERS): ">"}, count=2)
    # Two read, not acknowledged; one not read yet.
    assert stack_backlog()[f"risk on {stream_name(Topic.ORDERS)}"] == 3
    [(_, rest)] = redis_app.xreadgroup("risk", "r1", {stream_name(Topic.ORDERS): ">"})
    redis_app.xack(stream_name(Topic.ORDERS), "risk", *[entry_id for entry_id, _ in read + rest])
    [(_, [(command_id, _)])] = redis_app.xreadgroup(stream.GROUP, "m1", {commands: ">"})
    assert stack_backlog() == {f"matcher on {commands}": 1}  # read, not yet acknowledged (its batch not landed)
    redis_app.xack(commands, stream.GROUP, command_id)
    assert stack_backlog() == {}
    reset_bus()
