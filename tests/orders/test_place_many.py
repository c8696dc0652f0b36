"""``orders_order_place_many()`` (a batch, one statement per table) against ``orders_order_place()``
called for each order in turn: on random batches, from the same starting state, the same
outcomes, order rows, balances, holds, journal, events and audit rows (migration 0008)."""

from __future__ import annotations

import json
import random
import uuid
from decimal import Decimal as D

import pytest
from django.db import connection, transaction
from django.db.utils import IntegrityError

from orders import entry
from tests.factories import AssetFactory, MarketFactory, UserFactory
from wallet.invariants import ledger_violations
from wallet.services import deposit_credit

pytestmark = pytest.mark.django_db

_ORDER_KEYS = ("market_id", "client_order_id", "side", "type", "time_in_force", "price", "stop_price", "quantity",
               "quote_quantity", "stp_mode", "hold_amount", "maker_fee_rate", "taker_fee_rate", "status",
               "status_reason", "filled_quantity", "filled_notional", "fee_total", "client_ip", "api_key_id",
               "user_id")


@pytest.fixture
def setting():
    """Two markets on three assets; four users: two well funded, one with little, one with nothing."""
    btc, eth, usdt = (AssetFactory(code=code, precision=precision) for code, precision in
                      (("BTC", 8), ("ETH", 18), ("USDT", 6)))
    markets = [MarketFactory(base=btc, quote=usdt), MarketFactory(base=eth, quote=usdt)]
    users = [UserFactory() for _ in range(4)]
    for user, amount in zip(users, (D(50_000), D(20_000), D(300), None)):
        for asset in (btc, eth, usdt) if amount is not None else ():
            deposit_credit(user=user, asset=asset, amount=amount, txid=uuid.uuid4().hex, source="CUSTODY")
    return markets, users


class _Rollback(Exception):
    pass


def _tried(call) -> tuple:
    """What ``call()`` returns and the state it leaves, then rolled back."""
    try:
        with transaction.atomic():
            marks = _marks()
            rows = call()
            raise _Rollback(rows, _state(marks))
    except _Rollback as done:
        return done.args


def _marks() -> dict:
    with connection.cursor() as cursor:
        marks = {}
        for table in ("orders_order", "wallet_hold", "wallet_ledgertransaction", "exchange_outboxevent",
                      "exchange_auditlog"):
            cursor.execute(f"SELECT coalesce(max(id), 0) FROM {table}")
            marks[table] = cursor.fetchone()[0]
        return marks


def _fetch(sql: str, *params) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        names = [column.name for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]


def _state(marks: dict) -> dict:
    """What the placements wrote, with every generated id replaced by the order it belongs to."""
    names = {row["id"]: (row["user_id"], row["client_order_id"]) for row in _fetch("SELECT * FROM orders_order")}

    def named(text: str) -> str:
        return repr(names[int(text.split(":")[1])]) if text.startswith("order:") else text

    def payload(value) -> dict:
        value = dict(json.loads(value) if isinstance(value, str) else value)
        if "order_id" in value:
            value["order_id"] = names[value["order_id"]]
        value.pop("created_at", None)
        return value

    return {
        "accounts": [(row["user_id"], row["asset_id"], row["kind"], row["balance"]) for row in _fetch(
            "SELECT user_id, asset_id, kind, balance FROM wallet_account ORDER BY user_id, asset_id, kind")],
        "orders": sorted(tuple(row[key] for key in _ORDER_KEYS) for row in _fetch(
            "SELECT * FROM orders_order WHERE id > %s", marks["orders_order"])),
        "holds": sorted((named(row["reference"]), row["user_id"], row["asset_id"], row["amount"],
                         row["amount_remaining"], row["status"]) for row in _fetch(
            "SELECT * FROM wallet_hold WHERE id > %s", marks["wallet_hold"])),
        "journal": sorted((named(row["reference"]), row["kind"], row["memo"], row["user_id"], row["asset_id"],
                           row["account_kind"], row["amount"], row["hold_reference"] and named(row["hold_reference"]))
                          for row in _fetch(
            "SELECT t.reference, t.kind, t.memo, a.user_id, e.asset_id, a.kind AS account_kind, e.amount, "
            "h.reference AS hold_reference FROM wallet_ledgertransaction t "
            "JOIN wallet_ledgerentry e ON e.transaction_id = t.id JOIN wallet_account a ON a.id = e.account_id "
            "LEFT JOIN wallet_hold h ON h.id = e.hold_id WHERE t.id > %s", marks["wallet_ledgertransaction"])),
        # In the order the outbox relay publishes them (by id).
        "events": [(row["topic"], row["key"], row["event_type"], payload(row["payload"])) for row in _fetch(
            "SELECT * FROM exchange_outboxevent WHERE id > %s ORDER BY id", marks["exchange_outboxevent"])],
        "audit": [(row["action"], names[int(row["object_id"])], row["market"], row["actor_user_id"],
                   row["actor_api_key_id"], row["subject_user_id"], payload(row["after"]), row["ip"],
                   row["user_agent"], row["request_id"]) for row in _fetch(
            "SELECT * FROM exchange_auditlog WHERE id > %s ORDER BY id", marks["exchange_auditlog"])],
    }


def _answer(row: dict) -> tuple:
    placed = None if row["id"] is None else tuple(row[key] for key in _ORDER_KEYS)
    return row["outcome"], placed, row["available"], row["held"], row["asset_code"]


def _alone(batch: list[tuple]) -> list[tuple]:
    return [_answer(_fetch(entry.PLACE_SQL, *params)[0]) for params in batch]


def _together(batch: list[tuple]) -> list[tuple]:
    rows = _fetch(entry.PLACE_MANY_SQL, *[list(column) for column in zip(*batch)])
    assert [row["ordinal"] for row in rows] == list(range(1, len(batch) + 1))
    return [_answer(row) for row in rows]


def _params(rng: random.Random, market, user, client_order_id: str) -> tuple:
    side = rng.choice(["BUY", "SELL"])
    asset = market.quote if side == "BUY" else market.base
    amount = D(rng.randint(1, 4000)) / (10 ** min(asset.precision, 2)) * rng.choice([1, 1, 10, 100])
    return (user.pk, market.pk, market.symbol, client_order_id, side, "LIMIT", "GTC", D("100.5"), None, D("1.25"),
            None, "CANCEL_TAKER", asset.pk, amount, D("0.001"), D("0.002"), rng.choice(["10.0.0.1", "::1", None]),
            None, f"{side} LIMIT {market.symbol}", "agent/1.0", uuid.uuid4().hex)


def test_a_batch_places_as_placing_its_orders_one_by_one_would(setting):
    markets, users = setting
    rng = random.Random(20261201)
    placed_before = [_params(rng, markets[0], users[0], f"before-{i}") for i in range(3)]
    _alone(placed_before)  # client_order_ids a batch may repeat
    used = [params[3] for params in placed_before]
    outcomes = set()
    # The third user's 300 USDT: a hold of exactly what is left is accepted, the next refused.
    exact = []
    for amount in (D(200), D(100), D("0.01")):
        params = list(_params(rng, markets[0], users[2], uuid.uuid4().hex))
        params[4], params[12], params[13] = "BUY", markets[0].quote.pk, amount
        exact.append(tuple(params))
    together = _tried(lambda: _together(exact))
    assert [answer[0] for answer in together[0]] == [entry.ACCEPTED, entry.ACCEPTED, entry.INSUFFICIENT_FUNDS]
    assert together == _tried(lambda: _alone(exact))
    for trial in range(40):
        batch = []
        for _ in range(rng.randint(1, 24)):
            user = rng.choice(users)
            if rng.random() < 0.15 and batch:  # the id of an earlier order of this batch, maybe another user's
                client_order_id = rng.choice(batch)[3]
            elif rng.random() < 0.1:
                client_order_id = rng.choice(used)
            else:
                client_order_id = uuid.uuid4().hex
            batch.append(_params(rng, rng.choice(markets), user, client_order_id))
        together, alone = _tried(lambda: _together(batch)), _tried(lambda: _alone(batch))
        assert together == alone, f"trial {trial}"
        outcomes.update(answer[0] for answer in together[0])
    assert outcomes == {entry.ACCEPTED, entry.EXISTING, entry.INSUFFICIENT_FUNDS}
    assert ledger_violations() == []


def test_a_hold_that_is_not_whole_units_is_refused_in_a_batch_as_alone(setting):
    """The batch raises, as placing that order alone does (the caller then places each order
    alone, and only that one fails)."""
    markets, users = setting
    rng = random.Random(7)
    good = _params(rng, markets[0], users[0], "good")
    bad = list(_params(rng, markets[0], users[0], "bad"))
    bad[13] = D("0.0000001")  # below one unit of BTC or USDT
    for place, batch in ((_together, [good, tuple(bad)]), (_alone, [tuple(bad)])):
        with pytest.raises(IntegrityError, match="is not a positive whole number"), transaction.atomic():
            place(batch)
