"""Exports against committed data: orders, trades and the ledger of a real matcher run; the
ASGI path streaming in chunks; and an export checked offline against the chain."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import warnings
from datetime import timedelta

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from exchange.audit.chain import audit_chain
from exchange.roles import COMPLIANCE, roles_sync
from tests.exchange.audit.conftest import record
from tests.factories import UserFactory, login_staff
from tests.matching.conftest import drain, market, matcher, place, traders  # noqa: F401  (fixtures)

pytestmark = pytest.mark.django_db(transaction=True)


def compliance_client(client_class=APIClient):
    user = UserFactory(username="regina", is_staff=True)
    user.groups.add(roles_sync()[COMPLIANCE])
    client = client_class()
    login_staff(client, user)
    return client


def export(client, endpoint, **params) -> list[dict]:
    response = client.get(f"/api/v1/compliance/{endpoint}", params)
    assert response.status_code == 200, response.content
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_orders_trades_and_ledger_exports_of_a_matcher_run(traders, matcher):  # noqa: F811
    """After alice's bid is hit by bob: orders, trades and ledger entries filtered by user,
    market, time and journal kind hold exactly the rows concerned, amounts as exact decimals."""
    alice, bob, carol = traders
    bid = place(alice, "BUY", price="100.5", quantity="2")
    place(carol, "BUY", price="90", quantity="1")
    ask = place(bob, "SELL", price="100.5", quantity="0.5")
    drain(matcher)
    client = compliance_client()

    orders = export(client, "orders", user="alice")
    trades = export(client, "trades", user="bob", market="BTC-USDT")
    ledger = export(client, "ledger", user="alice", action="MATCH")  # the matcher's netted batches

    assert [(o["id"], o["price"], o["quantity"], o["filled_quantity"], o["status"]) for o in orders] == [
        (str(bid.pk), "100.5", "2", "0.5", "PARTIALLY_FILLED")]
    [trade] = trades
    assert (trade["maker_order_id"], trade["taker_order_id"], trade["price"], trade["quantity"], trade["notional"]) == (
        str(bid.pk), str(ask.pk), "100.5", "0.5", "50.25")
    assert (trade["maker_username"], trade["taker_username"]) == ("alice", "bob")
    assert {(e["asset"], e["account_kind"]) for e in ledger} >= {("BTC", "AVAILABLE"), ("USDT", "HELD")}
    assert all(e["username"] == "alice" and e["kind"] == "MATCH" for e in ledger)
    assert export(client, "orders", market="BTC-USDT", user="carol")[0]["status"] == "NEW"
    assert export(client, "trades", start=(timezone.now() + timedelta(minutes=1)).isoformat()) == []
    assert len(export(client, "ledger", action="DEPOSIT")) == 12  # 3 traders x 2 assets x 2 entries


def test_the_asgi_server_streams_an_export_in_chunks():
    """Through the ASGI application the web server runs (``exchange.asgi``), a large export
    leaves in many body messages as it is read, not gathered first; Django's buffering fallback
    (and its warning) is never used."""
    with connection.cursor() as cursor:
        cursor.execute("""INSERT INTO exchange_auditlog (action, object_type, object_id, actor_system, after)
                          SELECT 'BALANCE_ADJUST', 'wallet.ledgertransaction', n::text, 'bench',
                                 jsonb_build_object('amount', n::text, 'padding', repeat('x', 100))
                          FROM generate_series(1, 20000) n""")
    client = compliance_client(Client)
    cookie = client.cookies["sessionid"].value
    messages = []

    async def call():
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
                 "scheme": "http", "path": "/api/v1/compliance/audit-logs",
                 "raw_path": b"/api/v1/compliance/audit-logs",
                 "query_string": b"format=jsonl", "root_path": "",
                 "headers": [(b"host", b"testserver"), (b"cookie", f"sessionid={cookie}".encode())],
                 "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}
        delivered = asyncio.Event()

        async def receive():
            if not delivered.is_set():
                delivered.set()
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()  # the client never disconnects

        async def send(message):
            messages.append(message)

        await application(scope, receive, send)

    from exchange.asgi import application

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        asyncio.run(call())

    start, *bodies = messages
    assert start["status"] == 200
    assert not [w for w in caught if "must consume synchronous iterators" in str(w.message)]
    chunks = [m["body"] for m in bodies if m.get("body")]
    assert len(chunks) > 20 and max(map(len, chunks)) < 256 * 1024
    rows = [json.loads(line) for line in b"".join(chunks).decode().splitlines()]
    assert [row["after"]["amount"] for row in rows if row["actor_system"] == "bench"] == [
        str(n) for n in range(1, 20001)]


def _content(row: dict) -> list:
    """The chained content of one CSV row (docs/AUDIT.md, "Checking an export")."""

    def integer(name):
        return int(row[name]) if row[name] else None

    def nullable(name):
        return row[name] if row[name] else None

    return [int(row["chain_seq"]), int(row["id"]), row["txid"], row["created_at"], row["action"],
            row["object_type"], row["object_id"], row["market"], integer("actor_user_id"),
            integer("actor_api_key_id"), integer("actor_staff_id"), row["actor_system"], integer("subject_user_id"),
            nullable("ip"), row["user_agent"], row["request_id"], nullable("before"), nullable("after")]


def test_an_audit_export_can_be_checked_offline():
    """Recomputing each exported row's hash as docs/AUDIT.md describes gives its chain_hash, and
    each row's chain_prev_hash is the previous row's hash: the export carries its own proof."""
    staff = UserFactory(username="olga", is_staff=True)
    record(action="WITHDRAWAL_APPROVE", actor_staff=staff, subject_user=staff, ip="2001:db8::7",
           user_agent="Mozilla/5.0 \"quoted\"", before={"status": "REQUESTED", "amount": "1.50"},
           after={"status": "APPROVED", "note": "é, line\nbreak"})
    record(action="MARKET_HALT", market="BTC-USDT", after=None)
    audit_chain()

    rows = [row for row in export(compliance_client(), "audit-logs") if row["chain_seq"]]

    previous = bytes(32)
    for row in rows:
        content = json.dumps(_content(row), ensure_ascii=False, separators=(",", ":")).encode()
        assert row["chain_prev_hash"] == previous.hex()
        assert hashlib.sha256(previous + content).hexdigest() == row["chain_hash"]
        previous = bytes.fromhex(row["chain_hash"])
    assert len(rows) >= 2


def test_a_download_abandoned_midway_leaves_the_connection_usable():
    """Closing the stream after its first chunk (the client went away) ends the COPY; the same
    database connection then serves the next query."""
    from exchange.audit.exports import export_chunks, export_request

    with connection.cursor() as cursor:
        cursor.execute("""INSERT INTO exchange_auditlog (action, object_type, actor_system)
                          SELECT 'LOGIN', 'auth.user', 'bench' FROM generate_series(1, 5000)""")
    chunks = export_chunks(export_request(table="audit-logs", params={}), chunk_bytes=1024)

    first = next(chunks)
    chunks.close()

    assert first.startswith(b"id,txid,created_at,action")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM exchange_auditlog")
        assert cursor.fetchone() == (5000,)
