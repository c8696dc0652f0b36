"""Late commits, rollbacks and long epochs: the relay publishes every committed
event once, in the commit order of the transactions that wrote them, and never
waits for a transaction that has not committed.

The slow transactions here are separate PostgreSQL sessions (plain psycopg
connections) held open while others commit, as a slow order placement would be.
"""

from __future__ import annotations

import json
import threading
from datetime import datetime

import psycopg
import pytest
from django.db import connection, transaction

from exchange.outbox import metrics
from exchange.outbox.models import OutboxCursor, OutboxEvent, Topic
from exchange.outbox.relay import outbox_pending, outbox_relay
from exchange.outbox.services import Event, outbox_emit_many
from tests.exchange.outbox.conftest import rows, stream_events
from tests.factories import UserFactory

INSERT = """
    INSERT INTO exchange_outboxevent (topic, key, event_type, payload)
    VALUES (%s, %s, 'test.event', jsonb_build_object('label', %s::text))
"""


@pytest.fixture
def session():
    """Open PostgreSQL sessions on the test database, each in its own transaction until it commits."""
    opened = []

    def open_session() -> psycopg.Connection:
        params = connection.get_connection_params()
        conn = psycopg.connect(dbname=params["dbname"], user=params.get("user"), password=params.get("password", ""),
                               host=params.get("host"), port=params.get("port"))
        opened.append(conn)
        return conn

    yield open_session
    for conn in opened:
        conn.close()


def emit(key: str, label: str, topic: str = Topic.ORDERS) -> None:
    with transaction.atomic():
        outbox_emit_many([Event(topic, key, "test.event", {"label": label})])


def labels(client, topic: str = Topic.ORDERS, key: str | None = None) -> list[str]:
    return [e["data"]["label"] for e in stream_events(client, topic) if key is None or e["key"] == key]


def test_a_late_commit_is_published_after_its_commit_never_lost_and_holds_nobody_back(bus, redis_app, session):
    """A slow transaction writes an event for key K and stays open while later
    events of K (other transactions, other orders of the same market) commit:
    the relay publishes those at once, without waiting for it and without
    skipping past it; when it commits, its event is published next, once.
    Transactions that commit between two runs of the relay go out in id order,
    and after everything that committed before."""
    slow = session()
    slow.execute(INSERT, [Topic.ORDERS, "K", "slow"])  # id lower than the next ones; not committed
    emit("K", "later-1")
    emit("K", "later-2")

    while_open = outbox_relay(bus=bus)
    emit("J", "other")
    outbox_relay(bus=bus)

    assert while_open.published == 2
    assert labels(redis_app) == ["later-1", "later-2", "other"]
    assert outbox_pending() == (False, None)

    slow.commit()
    assert outbox_pending()[0]
    after_commit = outbox_relay(bus=bus)

    assert after_commit.published == 1
    assert labels(redis_app) == ["later-1", "later-2", "other", "slow"]
    assert min(r.id for r in rows()) == rows(payload__label="slow")[0].id
    assert outbox_relay(bus=bus).published == 0 and len(set(labels(redis_app))) == 4


def test_events_of_one_entity_go_out_in_the_order_its_writers_committed(bus, redis_app, session):
    """The order-placement / matcher race of issue 13: a matcher transaction B
    gets its transaction id first, then waits for the user's row that a
    placement A holds; A writes its balance event and commits, B then writes its
    newer one and commits, while an unrelated transaction C that took an id in
    between stays open. Emitters lock what an event describes before writing it,
    so A's event must go out before B's. (Publishing below an xmin horizon in id
    order would not: B's id is below C's, A's above, so B's event would be
    published alone, before A's.) Here both go out, A first, with C still open."""
    user = UserFactory()
    a, b, c = session(), session(), session()
    b_txid = b.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
    c_txid = c.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
    a.execute("SELECT id FROM auth_user WHERE id = %s FOR UPDATE", [user.pk])
    a_txid = a.execute("SELECT pg_current_xact_id()::text::bigint").fetchone()[0]
    a.execute(INSERT, [Topic.BALANCES, str(user.pk), "held by the placement"])
    b_locked = threading.Event()

    def matcher():
        b.execute("SELECT id FROM auth_user WHERE id = %s FOR UPDATE", [user.pk])  # waits for A
        b_locked.set()
        b.execute(INSERT, [Topic.BALANCES, str(user.pk), "after the fill"])
        b.commit()

    thread = threading.Thread(target=matcher)
    thread.start()
    assert not b_locked.wait(0.3), "B waits for A's lock"
    assert outbox_relay(bus=bus).published == 0
    a.commit()
    thread.join(10)

    result = outbox_relay(bus=bus)

    assert b_txid < c_txid < a_txid  # the ids were taken in the other order than the commits
    assert result.published == 2
    assert labels(redis_app, Topic.BALANCES) == ["held by the placement", "after the fill"]
    c.rollback()


def test_a_rolled_back_transaction_leaves_no_hole(bus, redis_app, session):
    """A transaction writes an event and rolls back after later ones committed:
    the relay never waited for it, publishes nothing of it, and moves on past
    it; nothing stays pending."""
    doomed = session()
    doomed.execute(INSERT, [Topic.ORDERS, "K", "doomed"])
    doomed_txid = doomed.execute("SELECT pg_current_xact_id()::text").fetchone()[0]
    emit("K", "a")
    assert outbox_relay(bus=bus).published == 1
    doomed.rollback()
    emit("K", "b")

    assert outbox_relay(bus=bus).published == 1

    assert labels(redis_app) == ["a", "b"]
    assert outbox_pending() == (False, None) and metrics.snapshot()["backlog"]["PENDING"] == 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_visible_in_snapshot(%s::xid8, published_snapshot) FROM exchange_outboxcursor",
                       [doomed_txid])
        assert cursor.fetchone()[0], "the cursor is past the rolled-back transaction"


def test_an_epoch_larger_than_a_batch_is_published_in_pages_and_commits_meanwhile_go_in_the_next(
        bus, redis_app, session):
    """300 events of five transactions, relayed 100 at a time: the first batch
    opens an epoch and publishes its first page; a transaction open before and
    one started after commit meanwhile; the rest of the epoch goes out first, in
    id order, then the two new commits (the next epoch, in id order too). Every
    event once, and no event row is ever written by the relay (its row version
    is still the one its transaction inserted)."""
    opened_before = session()
    opened_before.execute(INSERT, [Topic.ORDERS, "K", "opened before"])
    for t in range(5):
        with transaction.atomic():
            outbox_emit_many([Event(Topic.ORDERS, f"K{i % 3}", "test.event", {"label": f"{t}-{i}"})
                              for i in range(60)])

    first = outbox_relay(bus=bus, batch_size=100, max_batches=1)
    cursor = OutboxCursor.objects.get(id=1)
    assert first.published == 100 and cursor.epoch_snapshot and cursor.epoch_after_id
    emit("K", "started after")
    opened_before.commit()

    rest = outbox_relay(bus=bus, batch_size=100)

    assert rest.published == 202
    published = labels(redis_app)
    assert published[:300] == [r.payload["label"] for r in rows(key__in=["K0", "K1", "K2"])]
    assert published[300:] == ["opened before", "started after"]
    assert OutboxCursor.objects.get(id=1).epoch_snapshot is None and outbox_pending() == (False, None)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM exchange_outboxevent "
                       "WHERE xmin::text <> (txid::text::bigint % 4294967296)::text")
        assert cursor.fetchone()[0] == 0


def test_the_envelope_on_the_bus_is_what_the_database_holds(bus, redis_app):
    """Every field of the envelope the relay builds in PostgreSQL, including
    characters JSON must escape in the key and the payload."""
    with transaction.atomic():
        [row] = outbox_emit_many([Event(Topic.AUDIT, 'we"ird\\key', "audit.test", {"text": 'quote " and \\ é'},
                                        sequence=7)])
    outbox_relay(bus=bus)

    [raw] = redis_app.xrange("bus:audit.logs")
    envelope = json.loads(raw[1][b"event"])
    assert raw[1][b"key"].decode() == 'we"ird\\key' and raw[1][b"event_id"].decode() == str(row.event_id)
    assert datetime.fromisoformat(envelope.pop("occurred_at")) == row.created_at
    assert envelope == {"event_id": str(row.event_id), "topic": "audit.logs", "type": "audit.test", "version": 1,
                        "key": 'we"ird\\key', "sequence": 7, "data": {"text": 'quote " and \\ é'}}
    assert OutboxEvent.objects.get(pk=row.pk).txid > 0
