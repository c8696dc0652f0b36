"""The fast path's small Redis client (exchange/core/resp.py) against the real Redis."""

import asyncio

import pytest
from django.conf import settings

from exchange.core.resp import PipelineClient, ReplyError, encode


def run(coroutine):
    return asyncio.run(coroutine)


def test_commands_are_encoded_as_resp_arrays():
    assert encode([("SET", "k", 1), ("GET", b"k")]) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"


def test_a_pipeline_answers_in_order_on_the_configured_database(redis_app):
    """Replies come back in the order of the commands, on the application's database
    (the one redis-py's client sees); a refused command is a ReplyError in its place."""

    async def scenario():
        client = PipelineClient(settings.REDIS_APP_URL)
        try:
            return await client.execute([("SET", "resp:k", "v"), ("GET", "resp:k"), ("INCR", "resp:k"),
                                         ("GET", "resp:missing")])
        finally:
            await client.close()

    stored, value, refused, missing = run(scenario())
    assert (stored, value, missing) == (b"OK", b"v", None)
    assert isinstance(refused, ReplyError)
    assert redis_app.get("resp:k") == b"v"


def test_concurrent_pipelines_each_get_their_own_replies(redis_app):
    """Two hundred coroutines share one connection; each gets the replies to its own commands."""

    async def scenario():
        client = PipelineClient(settings.REDIS_APP_URL)

        async def one(index):
            replies = await client.execute([("SET", f"resp:{index}", index), ("GET", f"resp:{index}")])
            return replies[1]

        try:
            return await asyncio.gather(*(one(index) for index in range(200)))
        finally:
            await client.close()

    assert run(scenario()) == [str(index).encode() for index in range(200)]


def test_a_lost_connection_fails_what_waits_and_the_next_request_reconnects(redis_app):
    """Killing the client's connection on the server: the request in flight fails with
    ConnectionError (the order path answers 503), and the next one reconnects."""

    async def scenario():
        client = PipelineClient(settings.REDIS_APP_URL)
        try:
            await client.execute([("CLIENT", "SETNAME", "resp-test")])
            waiting = asyncio.ensure_future(client.execute([("BLPOP", "resp:never", 5)]))
            await asyncio.sleep(0.2)
            for entry in redis_app.client_list():
                if entry.get("name") == "resp-test":
                    redis_app.client_kill_filter(_id=entry["id"])
            with pytest.raises(ConnectionError):
                await waiting
            return await client.execute([("PING",)])
        finally:
            await client.close()

    assert run(scenario()) == [b"PONG"]


def test_a_server_still_loading_its_data_fails_the_request_with_connection_error(redis_loading):
    """Redis restarted and loading its append-only file answers LOADING to everything: the client
    fails the request with ConnectionError (the order path answers 503), not with a reply error
    its callers would take for a refusal."""

    async def scenario():
        client = PipelineClient(redis_loading)
        try:
            with pytest.raises(ConnectionError, match="LOADING"):
                await client.execute([("GET", "resp:k"), ("PING",)])
        finally:
            await client.close()

    run(scenario())
