"""The Redis counters behind the limits: kept consistent with the database by the order path
and the event consumer, rebuilt from the database when lost, never from zero."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from exchange.core.errors import ApplicationError
from exchange.core.redis import get_redis
from exchange.outbox.consumer import ReceivedEvent
from exchange.outbox.bus import stream_name
from exchange.outbox.models import Topic
from orders.models import Order
from orders.services import order_amend, order_cancel
from risk import counters
from risk.consumer import risk_event_handle
from risk.models import Scope
from risk.services import risk_limit_set
from tests.factories import UserFactory
from tests.risk.conftest import drain, fund, place, publish_and_consume

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sound_ledger")]


def raw(user) -> tuple[dict, dict]:
    """The user's two hashes, decoded."""
    client = get_redis()

    def decoded(key):
        return {k.decode(): v.decode() for k, v in client.hgetall(key).items()}

    return decoded(counters.counters_key(user.pk)), decoded(counters.open_key(user.pk))


def comparable(fields: dict) -> dict:
    """The counter fields that must agree between live and rebuilt counters: without the
    watermarks (a rebuild takes the market's last sequence) and without zeros."""
    return {name: value for name, value in fields.items() if not name.startswith("tw:") and value != "0"}


def refused_with(code: str, call, *args, **kwargs) -> None:
    with pytest.raises(ApplicationError) as info:
        call(*args, **kwargs)
    assert info.value.code == code, info.value.as_dict()


def test_ended_orders_leave_the_open_order_count(live_market, traders, matcher):
    """With two open orders allowed, a third is refused until one of them fills and another is
    cancelled: the consumer takes them off the count when their events arrive."""
    alice, bob = traders[:2]
    risk_limit_set(scope=Scope.GLOBAL, values={"max_open_orders": 2})
    filled = place(alice, "BUY", price="100", quantity="1")
    resting = place(alice, "BUY", price="99", quantity="1")
    refused_with("RISK_MAX_OPEN_ORDERS", place, alice, "BUY", price="98", quantity="1")

    place(bob, "SELL", price="100", quantity="1")
    drain(matcher)
    refused_with("RISK_MAX_OPEN_ORDERS", place, alice, "BUY", price="98", quantity="1")  # the event is not consumed yet
    publish_and_consume()
    assert Order.objects.get(pk=filled.pk).status == "FILLED"
    place(alice, "BUY", price="98", quantity="1")
    refused_with("RISK_MAX_OPEN_ORDERS", place, alice, "BUY", price="97", quantity="1")

    order_cancel(user=alice, order_id=resting.pk)
    drain(matcher)
    publish_and_consume()
    place(alice, "BUY", price="97", quantity="1")


def test_fills_move_from_open_orders_to_the_position(live_market, traders, matcher):
    """A partial fill moves the filled quantity from the order's reservation to the position:
    the potential position (position + open orders) is the same before and after the event, and
    exactly the rest of the limit can still be bought."""
    alice, bob = traders[:2]
    risk_limit_set(scope=Scope.GLOBAL, values={"max_position": "2"})
    place(alice, "BUY", price="100", quantity="1.5")
    place(bob, "SELL", price="100", quantity="1")
    drain(matcher)
    publish_and_consume()
    main, entries = raw(alice)
    assert (main["p:" + str(live_market.base_id)], main["xb:" + str(live_market.base_id)]) == ("100000000", "50000000")
    refused_with("RISK_MAX_POSITION", place, alice, "BUY", price="100", quantity="0.5001")
    place(alice, "BUY", price="99", quantity="0.5")
    # Selling is bounded on its own side: the 1 bought counts against a short position.
    place(alice, "SELL", price="101", quantity="3")
    refused_with("RISK_MAX_POSITION", place, alice, "SELL", price="101", quantity="0.01")
    main, _ = raw(bob)
    assert main["p:" + str(live_market.base_id)] == "-100000000"


def test_a_redelivered_event_changes_nothing(live_market, traders, matcher):
    """Handling the same trade and order events again (a redelivery whose dedupe record was lost)
    leaves the counters as they were: the fill's sequence is at the watermark, the order's entry is gone."""
    alice, bob = traders[:2]
    place(alice, "BUY", price="100", quantity="1")
    place(bob, "SELL", price="100", quantity="1")
    drain(matcher)
    publish_and_consume()
    before = raw(alice), raw(bob)
    client = get_redis()
    for topic in (Topic.TRADES, Topic.ORDERS):
        for _, fields in client.xrange(stream_name(topic)):
            risk_event_handle(ReceivedEvent.parse(fields[b"event"]))
    assert (raw(alice), raw(bob)) == before


def test_the_counters_are_rebuilt_from_the_database_after_a_flush(live_market, traders, matcher):
    """After open, partly filled, filled, cancelled and market orders (and their events), flushing
    Redis and rebuilding gives the same counters; the next order is judged against them, not
    against zero."""
    alice, bob = traders[:2]
    place(alice, "BUY", price="100", quantity="2")  # partly filled below
    place(alice, "BUY", price="99", quantity="1")  # rests
    cancelled = place(alice, "SELL", price="120", quantity="0.5")
    place(bob, "SELL", price="100", quantity="1.25")
    place(alice, "SELL", "MARKET", quantity="0.1")  # fills against nothing on the bid? it takes alice's own bids: STP
    place(bob, "BUY", "MARKET", quote_quantity="50")  # no asks left at 100: expires
    order_cancel(user=alice, order_id=cancelled.pk)
    drain(matcher)
    publish_and_consume()
    live = raw(alice), raw(bob)

    get_redis().flushdb()
    for user in (alice, bob):
        assert counters.counters_rebuild(user_id=user.pk) is True
        assert counters.counters_rebuild(user_id=user.pk) is False, "a second rebuild leaves warm counters alone"
    rebuilt = raw(alice), raw(bob)
    for (live_main, live_open), (new_main, new_open) in zip(live, rebuilt):
        assert comparable(new_main) == comparable(live_main)
        assert new_open == live_open

    from matching import stream

    stream.heartbeat_write(live_market.symbol, sequence=0, pid=0, backlog=0, last_price="100")
    risk_limit_set(scope=Scope.USER, user=alice, values={"max_open_orders": 2})
    refused_with("RISK_MAX_OPEN_ORDERS", place, alice, "BUY", price="98", quantity="1")


def test_orders_the_database_refuses_give_their_reservation_back(live_market, traders):
    """An order refused for insufficient funds, and a replayed client_order_id, leave the
    counters as they were."""
    alice = traders[0]
    poor = UserFactory(username="poor")
    fund(poor, live_market, {"USDT": D("50"), "BTC": D("1")})
    risk_limit_set(scope=Scope.GLOBAL, values={"max_daily_orders": 1})
    refused_with("INSUFFICIENT_FUNDS", place, poor, "BUY", price="100", quantity="1")
    place(poor, "BUY", price="100", quantity="0.5")

    risk_limit_set(scope=Scope.GLOBAL, values={"max_daily_orders": 2})
    first = place(alice, "BUY", price="100", quantity="1", client_order_id="same")
    again = place(alice, "BUY", price="100", quantity="1", client_order_id="same")
    assert again.pk == first.pk
    main, entries = raw(alice)
    assert main["n"] == "1" and list(entries) == ["same"]


def test_an_amendment_reserves_what_its_new_terms_add(live_market, traders, matcher):
    """Growing a resting buy counts the extra quantity against the position limit (refused
    over it); an amendment the ledger refuses gives its reservation back."""
    alice = traders[0]
    risk_limit_set(scope=Scope.GLOBAL, values={"max_position": "2"})
    order = place(alice, "BUY", price="100", quantity="1")
    drain(matcher)
    refused_with("RISK_MAX_POSITION", order_amend, user=alice, order_id=order.pk, price=None, quantity=D("2.0001"))
    order_amend(user=alice, order_id=order.pk, price=None, quantity=D("2"))
    drain(matcher)
    refused_with("RISK_MAX_POSITION", place, alice, "BUY", price="99", quantity="0.0102")

    risk_limit_set(scope=Scope.GLOBAL, values={"max_position": "1000"})
    other = place(alice, "SELL", price="110", quantity="1")
    drain(matcher)
    with pytest.raises(ApplicationError) as info:  # more BTC to sell than alice has (100)
        order_amend(user=alice, order_id=other.pk, price=None, quantity=D("150"))
    assert info.value.code == "INSUFFICIENT_FUNDS"
    _, entries = raw(alice)
    assert entries[other.client_order_id] == f"{live_market.base_id}:s:100000000"


def test_events_for_cold_counters_are_counted_once_after_a_rebuild(live_market, traders, matcher):
    """Redis flushed after a trade but before its events were consumed: the consumer rebuilds the
    users' counters from the database (which has the trade) and then skips the trade's event,
    so the fill counts once."""
    alice, bob = traders[:2]
    place(alice, "BUY", price="100", quantity="1")
    place(bob, "SELL", price="100", quantity="0.4")
    drain(matcher)
    get_redis().flushdb()
    publish_and_consume()
    main, entries = raw(alice)
    base = str(live_market.base_id)
    assert (main["p:" + base], main["xb:" + base]) == ("40000000", "60000000")
    assert list(entries.values()) == [f"{base}:b:60000000"]
    assert raw(bob)[0]["p:" + base] == "-40000000" and raw(bob)[1] == {}


def test_amounts_beyond_int64_units_are_counted_without_error(live_market, traders):
    """An order worth almost 10^20 (beyond what 64-bit integers of 10^-8 hold) is checked and
    reserved without error, refused by the ledger, and its reservation given back exactly."""
    alice = traders[0]
    place(alice, "BUY", price="100", quantity="1")
    before = raw(alice)
    refused_with("INSUFFICIENT_FUNDS", place, alice, "BUY", "MARKET", quote_quantity="99999999999999999999")
    assert raw(alice) == before


def test_the_scripts_add_and_compare_amounts_of_any_size_exactly(redis_app):
    """The scripts' amounts ({hi, lo} pairs) add, negate, compare and print exactly like Python's
    integers, for signed values from 0 to 10^30 units, and across the 10^15 boundary."""
    import random

    probe = redis_app.register_script(counters._LUA_ARITHMETIC + """
local out = {}
for i = 1, #ARGV, 2 do
  local a, b = amount(ARGV[i]), amount(ARGV[i + 1])
  out[#out + 1] = text(plus(a, b))
  out[#out + 1] = text(plus(a, negated(b)))
  out[#out + 1] = less(a, b) and '1' or '0'
end
return out
""")
    rng = random.Random(7)
    edges = [0, 1, -1, 10**15 - 1, 10**15, -(10**15), 10**15 + 1, 2**53, 2**63, -(2**63), 10**28, -(10**28) + 1]
    pairs = [(a, b) for a in edges for b in edges]
    pairs += [(rng.randint(-10**30, 10**30), rng.randint(-10**30, 10**30)) for _ in range(300)]
    pairs += [(rng.randint(-10**16, 10**16), rng.randint(-10**16, 10**16)) for _ in range(300)]
    reply = probe(args=[str(value) for pair in pairs for value in pair])
    expected = [item for a, b in pairs for item in (str(a + b), str(a - b), "1" if a < b else "0")]
    assert [item.decode() for item in reply] == expected


def test_a_reservation_no_order_backs_is_given_back_a_minute_after_it_was_first_seen(live_market, traders,
                                                                                   monkeypatch):
    """A worker that dies between reserving an order and releasing it (here: the release does
    nothing, and the database refuses the order) leaves an entry in the counters. The reconciler
    leaves it alone while it may be an order being placed, then rebuilds that user's counters;
    other users' counters and an entry whose order exists are not touched."""
    alice, bob = traders[:2]
    place(alice, "BUY", price="99", quantity="1")
    place(bob, "SELL", price="120", quantity="1")
    monkeypatch.setattr("risk.pretrade.Reservation.release", lambda self, client=None: None)
    refused_with("INSUFFICIENT_FUNDS", place, alice, "SELL", price="120", quantity="999")  # 100 BTC funded
    monkeypatch.undo()
    leaked_main, leaked_open = raw(alice)
    assert len(leaked_open) == 2 and Order.objects.filter(user=alice).count() == 1
    bob_before = raw(bob)

    assert counters.reservations_reconcile(now_s=1000.0) == []  # first seen: maybe an order being placed
    assert counters.reservations_reconcile(now_s=1059.0) == []
    assert raw(alice) == (leaked_main, leaked_open)
    assert counters.reservations_reconcile(now_s=1060.0) == [alice.pk]

    main, entries = raw(alice)
    [order] = Order.objects.filter(user=alice)
    assert list(entries) == [order.client_order_id]
    assert int(main["n"]) == 1 and int(leaked_main["n"]) == 2  # today's count lost the order never placed
    assert int(main.get("xs:" + str(live_market.base_id), 0)) == 0 < int(leaked_main["xs:" + str(live_market.base_id)])
    assert raw(bob) == bob_before
    assert counters.reservations_reconcile(now_s=1200.0) == []  # nothing left to find


def test_an_entry_that_finds_its_order_is_no_longer_a_suspect(live_market, traders):
    """An entry seen once without an open order, whose order then exists (it was being placed),
    is forgotten: a later pass does not act on the first sighting."""
    alice = traders[0]
    order = place(alice, "BUY", price="99", quantity="1")
    client = get_redis()
    client.hset(counters.SUSPECTS_KEY, f"{alice.pk}:{order.client_order_id}", 0)  # seen long ago
    assert counters.reservations_reconcile(now_s=1000.0) == []  # it is open now: nothing to do
    assert client.hgetall(counters.SUSPECTS_KEY) == {}
