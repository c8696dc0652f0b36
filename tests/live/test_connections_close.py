"""Credentials that end close the live connections they opened (exchange/live/control.py): revoking an API
key closes the connections authenticated with it, signing out closes that session's, deactivating a user
closes all of theirs and cancels their open orders. Other connections stay open."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.testing import WebsocketCommunicator
from django.test import Client

from exchange.accounts.services import user_deactivate
from exchange.apikeys import signing
from exchange.apikeys.services import api_key_create, api_key_revoke
from exchange.asgi import application
from exchange.live.control import CLOSE_CODE
from exchange.roles import OPERATORS, roles_sync
from orders.models import Order
from tests.factories import UserFactory
from tests.live.conftest import place, receive

pytestmark = pytest.mark.django_db(transaction=True)


def run(coroutine_function):
    return async_to_sync(coroutine_function)()


def session_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


async def connect(session: Client | None = None) -> WebsocketCommunicator:
    headers = [(b"host", b"127.0.0.1")]
    if session is not None:
        headers.append((b"cookie", f"sessionid={session.cookies['sessionid'].value}".encode()))
    ws = WebsocketCommunicator(application, "/ws/", headers=headers)
    connected, _ = await ws.connect()
    assert connected
    return ws


async def authenticate(ws, key, secret) -> None:
    headers = signing.signed_headers(key.key_id, secret, "GET", "/ws/")
    await ws.send_json_to({"op": "auth", "id": "a", "api_key": key.key_id, "timestamp": int(headers["X-TIMESTAMP"]),
                           "recvWindow": int(headers["X-RECV-WINDOW"]), "signature": headers["X-SIGNATURE"]})
    assert (await receive(ws))["type"] == "authenticated"


async def still_open(ws) -> bool:
    await ws.send_json_to({"op": "ping", "id": "p"})
    return (await receive(ws))["type"] == "pong"


def test_revoking_a_key_closes_its_connections_only(channel_redis):
    alice = UserFactory(username="alice")
    first, first_secret = api_key_create(user=alice, label="one", permissions=["read"], ip_allowlist=[])
    second, second_secret = api_key_create(user=alice, label="two", permissions=["read"], ip_allowlist=[])

    async def scenario():
        revoked_ws, kept_ws = await connect(), await connect()
        await authenticate(revoked_ws, first, first_secret)
        await authenticate(kept_ws, second, second_secret)

        await sync_to_async(api_key_revoke)(user=alice, key_id=first.key_id)

        output = await revoked_ws.receive_output(timeout=3)
        assert (output["type"], output.get("code")) == ("websocket.close", CLOSE_CODE)
        assert await still_open(kept_ws)
        await kept_ws.disconnect()

    run(scenario)


def test_signing_out_closes_that_sessions_connections_only(channel_redis):
    alice = UserFactory(username="alice")
    laptop, phone = session_of(alice), session_of(alice)

    async def scenario():
        laptop_ws, phone_ws = await connect(laptop), await connect(phone)

        response = await sync_to_async(laptop.post)("/api/v1/auth/logout")
        assert response.status_code == 204

        output = await laptop_ws.receive_output(timeout=3)
        assert (output["type"], output.get("code")) == ("websocket.close", CLOSE_CODE)
        assert await still_open(phone_ws)
        await phone_ws.disconnect()

    run(scenario)


def test_deactivating_a_user_closes_everything_and_cancels_their_orders(channel_redis, live_matcher, traders):
    """The deactivated user's session and key connections close; their resting order is cancelled by the
    matcher; another user's connection is untouched."""
    alice, bob = traders[0], traders[1]
    operator = UserFactory(username="olga", is_staff=True)
    operator.groups.add(roles_sync()[OPERATORS])
    key, secret = api_key_create(user=alice, label="bot", permissions=["read", "trade"], ip_allowlist=[])
    order = place(alice, "BUY", price="100", quantity="1")
    live_matcher.drain()
    assert Order.objects.get(pk=order.pk).status == "NEW"
    alice_session, bob_session = session_of(alice), session_of(bob)

    async def scenario():
        session_ws, key_ws, bob_ws = await connect(alice_session), await connect(), await connect(bob_session)
        await authenticate(key_ws, key, secret)

        flagged, refused = await sync_to_async(user_deactivate)(user=alice, actor=operator, reason="fraud case 12")
        assert (flagged, refused) == (1, [])

        for ws in (session_ws, key_ws):
            output = await ws.receive_output(timeout=3)
            assert (output["type"], output.get("code")) == ("websocket.close", CLOSE_CODE)
        assert await still_open(bob_ws)
        await bob_ws.disconnect()
        await live_matcher.adrain()

    run(scenario)
    assert Order.objects.get(pk=order.pk).status == "CANCELED"
    alice.refresh_from_db()
    assert not alice.is_active


def test_a_new_password_closes_the_users_session_connections_not_their_keys(channel_redis):
    """Whatever door sets it (here the model, as `changepassword` does), a new password
    closes every live connection the user opened with a session; an API key's stays,
    and so does another user's."""
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    key, secret = api_key_create(user=alice, label="bot", permissions=["read"], ip_allowlist=[])
    laptop, phone, bob_session = session_of(alice), session_of(alice), session_of(bob)

    async def scenario():
        laptop_ws, phone_ws, key_ws = await connect(laptop), await connect(phone), await connect()
        bob_ws = await connect(bob_session)
        await authenticate(key_ws, key, secret)

        def change():
            alice.set_password("a new long passphrase 7")
            alice.save()

        await sync_to_async(change)()

        for ws in (laptop_ws, phone_ws):
            output = await ws.receive_output(timeout=3)
            assert (output["type"], output.get("code")) == ("websocket.close", CLOSE_CODE)
        assert await still_open(key_ws)
        assert await still_open(bob_ws)
        await key_ws.disconnect()
        await bob_ws.disconnect()

    run(scenario)
