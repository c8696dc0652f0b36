"""The order flow writes its outbox events in the transactions of its changes:
placement, cancel and amend requests from the API side; order, trade, market
and balance events from the matcher's batch, with the engine's sequences."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal as D

from exchange.outbox.models import OutboxEvent
from matching.services import market_status_request
from orders.models import Order, Trade
from orders.services import order_amend, order_cancel
from tests.matching.conftest import drain, place
from wallet.selectors import balances_for_user


def events(event_type: str, **filters) -> list[OutboxEvent]:
    return list(OutboxEvent.objects.filter(event_type=event_type, **filters).order_by("id"))


def balance_of(user, code: str) -> tuple[str, str]:
    for row in balances_for_user(user=user):
        if row.asset == code:
            return str(row.available.normalize()), str(row.held.normalize())
    raise AssertionError(code)


def test_placement_cancel_and_amend_requests_write_their_events(traders, matcher):
    """order.accepted carries the order as placed (decimals as strings), its
    hold writes balance.changed; cancel and amend requests write theirs."""
    alice, _, _ = traders
    OutboxEvent.objects.all().delete()
    order = place(alice, "BUY", price="100.5", quantity="0.25")

    [accepted] = events("order.accepted")
    assert (accepted.topic, accepted.key, accepted.sequence) == ("order.events", "BTC-USDT", None)
    # An ISO 8601 time, as PostgreSQL writes it (trailing zeros of the microseconds dropped).
    assert datetime.fromisoformat(accepted.payload.pop("created_at")) == order.created_at
    assert accepted.payload == {
        "order_id": order.pk, "client_order_id": order.client_order_id, "user_id": alice.pk, "market": "BTC-USDT",
        "side": "BUY", "type": "LIMIT", "time_in_force": "GTC", "price": "100.5", "stop_price": None,
        "quantity": "0.25", "quote_quantity": None, "stp_mode": order.stp_mode, "hold_amount": "25.125",
        "maker_fee_rate": "0.001", "taker_fee_rate": "0.002", "status": "PENDING",
    }
    [held] = events("balance.changed")
    assert (held.topic, held.key) == ("balance.events", str(alice.pk))
    assert held.payload == {"user_id": alice.pk, "asset": "USDT", "available": "999974.875", "held": "25.125"}

    drain(matcher)
    order_amend(user=alice, order_id=order.pk, price=D("100.6"), quantity=None)
    [amend] = events("order.amend_requested")
    assert (amend.payload["order_id"], amend.payload["new_price"], amend.payload["new_quantity"]) == (
        order.pk, "100.6", "0.25")
    drain(matcher)
    order_cancel(user=alice, order_id=order.pk)
    order_cancel(user=alice, order_id=order.pk)  # a repeat requests nothing new
    [cancel] = events("order.cancel_requested")
    assert cancel.payload["order_id"] == order.pk


def test_a_matcher_batch_writes_order_trade_and_balance_events_with_its_sequences(traders, matcher):
    """One batch: a maker, a taker that fills it and rests, in one commit. Every
    changed order gets an order.updated with its state after the batch and the
    sequence of its last event; every trade a trade.executed with its sequence;
    every (user, asset) whose balance moved a balance.changed with the balances
    after the batch. Order and trade events are in sequence order."""
    alice, bob, _ = traders
    maker = place(alice, "SELL", price=100, quantity=1)
    taker = place(bob, "BUY", price=101, quantity="1.5")
    first = OutboxEvent.objects.order_by("-id").first().id

    drain(matcher)

    maker.refresh_from_db()
    taker.refresh_from_db()
    trade = Trade.objects.get()
    updates = events("order.updated", id__gt=first)
    assert [(e.key, e.payload["order_id"], e.sequence) for e in updates] == [
        ("BTC-USDT", maker.pk, maker.last_sequence), ("BTC-USDT", taker.pk, taker.last_sequence)]
    assert [e.sequence for e in updates] == sorted(e.sequence for e in updates)
    by_order = {e.payload["order_id"]: e.payload for e in updates}
    assert {k: by_order[taker.pk][k] for k in ("status", "filled_quantity", "filled_notional", "average_price",
                                                "fee_total", "price", "quantity", "last_sequence")} == {
        "status": "PARTIALLY_FILLED", "filled_quantity": "1", "filled_notional": "100", "average_price": "100",
        "fee_total": "0.002", "price": "101", "quantity": "1.5", "last_sequence": taker.last_sequence}
    assert (by_order[maker.pk]["status"], by_order[maker.pk]["fee_total"]) == ("FILLED", "0.1")

    [executed] = events("trade.executed", id__gt=first)
    assert (executed.topic, executed.key, executed.sequence) == ("trade.events", "BTC-USDT", trade.sequence)
    assert executed.payload == {
        "trade_id": trade.pk, "market": "BTC-USDT", "sequence": trade.sequence, "price": "100", "quantity": "1",
        "notional": "100", "taker_side": "BUY", "maker_order_id": maker.pk, "taker_order_id": taker.pk,
        "maker_user_id": alice.pk, "taker_user_id": bob.pk, "maker_fee": "0.1", "maker_fee_asset": "USDT",
        "taker_fee": "0.002", "taker_fee_asset": "BTC", "executed_at": executed.payload["executed_at"],
    }

    moved = {(e.payload["user_id"], e.payload["asset"]): e.payload for e in events("balance.changed", id__gt=first)}
    assert set(moved) == {(alice.pk, "BTC"), (alice.pk, "USDT"), (bob.pk, "BTC"), (bob.pk, "USDT")}
    for user in (alice, bob):
        for code in ("BTC", "USDT"):
            assert (moved[user.pk, code]["available"], moved[user.pk, code]["held"]) == balance_of(user, code)
    assert OutboxEvent.objects.filter(id__gt=first).count() == 2 + 1 + 4


def test_market_status_requests_and_changes_are_market_events(traders, matcher):
    """The admin's request, then the matcher's change with its sequence."""
    market = matcher.market
    market_status_request(market=market, new_status="HALTED", actor=None, reason="incident 42")
    drain(matcher)

    requested, changed = events("market.status_change_requested"), events("market.status_changed")
    assert [(e.topic, e.key, e.payload["requested_status"]) for e in requested] == [
        ("market.events", "BTC-USDT", "HALTED")]
    [change] = changed
    assert change.sequence == matcher.book.sequence and change.sequence is not None
    assert (change.payload["status"], change.payload["previous_status"], change.payload["reason"]) == (
        "HALTED", "TRADING", "incident 42")
    assert Order.objects.count() == 0
