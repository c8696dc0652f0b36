"""A user's trading state on the WebSocket channel ``user.account``: sent on subscribe and after
every kill switch on the user, to that user's connections only."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async

from risk.services import restriction_set, user_resume
from tests.live.conftest import channel_redis, communicator, receive  # noqa: F401 (fixture and helpers)

pytestmark = pytest.mark.django_db(transaction=True)


def test_the_account_channel_follows_freeze_and_resume(channel_redis, live_market, traders):
    """Subscribing gives ACTIVE at once; freezing the user sends FROZEN, cancel-only on top
    still reads FROZEN, and resuming sends ACTIVE; bob, connected too, receives none of it."""
    alice, bob = traders[:2]

    async def subscribed(user):
        ws = await sync_to_async(communicator)(user)
        connected, _ = await ws.connect()
        assert connected
        await ws.send_json_to({"op": "subscribe", "channels": ["user.account"]})
        assert (await receive(ws))["type"] == "subscribed"
        return ws

    async def scenario():
        ws, other = await subscribed(alice), await subscribed(bob)
        first = await receive(ws)
        assert (first["channel"], first["data"]) == ("user.account", {"status": "ACTIVE", "exchange_halted": False})
        await receive(other)
        await sync_to_async(restriction_set)(kind="USER_FROZEN", user=alice, reason="incident")
        assert (await receive(ws))["data"]["status"] == "FROZEN"
        await sync_to_async(restriction_set)(kind="USER_CANCEL_ONLY", user=alice, reason="also")
        assert (await receive(ws))["data"]["status"] == "FROZEN"
        await sync_to_async(user_resume)(user=alice, reason="cleared")
        updates = [await receive(ws) for _ in range(2)]  # one per restriction lifted
        assert updates[-1]["data"]["status"] == "ACTIVE" and updates[-1]["sequence"] == 5
        assert await other.receive_nothing(timeout=0.5)
        await ws.disconnect()
        await other.disconnect()

    async_to_sync(scenario)()


def test_the_account_channel_needs_an_authenticated_connection(channel_redis, live_market):
    """Anonymous connections cannot subscribe to it (AUTH_REQUIRED), like every user channel."""

    async def scenario():
        ws = communicator()
        await ws.connect()
        await ws.send_json_to({"op": "subscribe", "channels": ["user.account"]})
        assert (await receive(ws))["data"]["code"] == "AUTH_REQUIRED"
        await ws.disconnect()

    async_to_sync(scenario)()
