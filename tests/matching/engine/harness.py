"""Checks shared by the property tests and the seeded random runs.

``Harness.apply(command)`` feeds one command to:

- the engine, then ``check_invariants()``;
- the naive ``ReferenceBook``: its events must equal the engine's exactly
  (kinds, sequences, every field), BOOK_DELTAs as the set of changed levels;
- an ``EventMirror``, which rebuilds order state and the book from the events
  alone, as the database worker will, and checks on the way: sequences go up
  by exactly 1; trades happen at the maker's price, with the best-priority
  resting order (price, then time), against a taker that crosses it; no order
  fills beyond its quantity (or quote limit); every order gets exactly one
  terminal event, carrying the sum of its trades; quantity is conserved
  (filled + open = quantity while open, filled <= quantity at the end); and
  after the command the mirror's book (orders, priority order, remaining,
  fill totals) and the depth rebuilt from BOOK_DELTAs equal the engine's;
- optionally a replica restored from a JSON round trip of a snapshot taken
  earlier: it must emit the very same events.
"""

import json

from matching.engine import BUY, SELL, OrderBook

from .reference import ReferenceBook


def as_tuple(event):
    return (event.kind, *event)


class EventMirror:
    """Order and book state derived from events only (what a worker knows)."""

    def __init__(self):
        self.sequence = 0
        self.orders = {}  # order_id -> dict, every order ever accepted
        self.resting = {BUY: {}, SELL: {}}  # order_id -> order dict
        self.stops = {}  # order_id -> order dict (untriggered)
        self.in_flight = []  # orders executing in the current command
        self.depth = {}  # (side, price_ticks) -> quantity_lots, from BOOK_DELTA
        self.trade_prices = set()

    def apply(self, events):
        for event in events:
            assert event.sequence == self.sequence + 1, (event, self.sequence)
            self.sequence = event.sequence
            getattr(self, "on_" + event.kind)(event)
        self.end_executions()

    def end_executions(self):
        """An executing order's turn ends when a triggered stop starts
        executing or the command's events end; if still open, it rests."""
        for order in self.in_flight:
            if order["state"] == "OPEN":
                self.resting[order["side"]][order["id"]] = order
        self.in_flight = []

    def best_resting(self, side):
        orders = self.resting[side].values()
        if side == BUY:
            return min(orders, key=lambda o: (-o["price"], o["priority"]))
        return min(orders, key=lambda o: (o["price"], o["priority"]))

    def finish(self, order_id, state, filled, notional):
        order = self.orders[order_id]
        assert order["state"] in ("OPEN", "UNTRIGGERED"), f"second terminal event for {order_id}"
        assert (filled, notional) == (order["filled"], order["notional"]), (order_id, filled, notional, order)
        if order["quantity"] is not None:
            assert filled <= order["quantity"]
        order["state"] = state
        self.resting[order["side"]].pop(order_id, None)
        self.stops.pop(order_id, None)

    # ------------------------------------------------------------- handlers

    def on_ACCEPTED(self, e):
        # The book only knows open orders: an id re-used after its order
        # closed is accepted again (docs/ENGINE.md, DUPLICATE_ORDER_ID).
        previous = self.orders.get(e.order_id)
        assert previous is None or previous["state"] not in ("OPEN", "UNTRIGGERED"), "open id accepted twice"
        order = {
            "id": e.order_id,
            "user": e.user_id,
            "side": e.side,
            "type": e.order_type,
            "price": e.price_ticks,
            "stop": e.stop_price_ticks,
            "quantity": e.quantity_lots,
            "quote": e.quote_limit_tl,
            "filled": 0,
            "notional": 0,
            "priority": e.sequence,
            "state": "OPEN" if e.status == "NEW" else "UNTRIGGERED",
        }
        self.orders[e.order_id] = order
        if e.status == "NEW":
            self.in_flight.append(order)
        else:
            self.stops[e.order_id] = order

    def on_REJECTED(self, e):
        assert (e.quantity_lots_filled, e.notional_tl_filled) == (0, 0)
        if e.reason != "DUPLICATE_ORDER_ID":
            assert e.order_id not in self.orders or self.orders[e.order_id]["state"] not in ("OPEN", "UNTRIGGERED")

    def on_CANCEL_REJECTED(self, e):
        pass

    def on_AMEND_REJECTED(self, e):
        pass

    def on_TRADE(self, e):
        maker = self.orders[e.maker_order_id]
        taker = self.orders[e.taker_order_id]
        assert maker["id"] in self.resting[maker["side"]], "maker is not resting"
        assert taker in self.in_flight and taker["state"] == "OPEN", "taker is not executing"
        assert e.taker_side == taker["side"] != maker["side"]
        assert e.price_ticks == maker["price"], "trade not at the maker's price"
        assert self.best_resting(maker["side"]) is maker, "price-time priority violated"
        if taker["price"] is not None:
            assert (e.price_ticks <= taker["price"]) if taker["side"] == BUY else (e.price_ticks >= taker["price"])
        assert e.quantity_lots > 0
        notional = e.price_ticks * e.quantity_lots
        for order in (maker, taker):
            order["filled"] += e.quantity_lots
            order["notional"] += notional
            if order["quantity"] is not None:
                assert order["filled"] <= order["quantity"], f"order {order['id']} overfilled"
        if taker["quote"] is not None:
            assert taker["notional"] <= taker["quote"], "quote limit exceeded"
        self.trade_prices.add(e.price_ticks)
        self.last_price = e.price_ticks

    def on_PARTIALLY_FILLED(self, e):
        order = self.orders[e.order_id]
        assert order["state"] == "OPEN"
        assert (e.quantity_lots_filled, e.notional_tl_filled) == (order["filled"], order["notional"])
        assert 0 < e.quantity_lots_filled
        assert e.quantity_lots_remaining == order["quantity"] - order["filled"] > 0

    def on_FILLED(self, e):
        order = self.orders[e.order_id]
        if order["type"] in ("MARKET", "STOP_LOSS", "TAKE_PROFIT"):
            assert e.quantity_lots_filled == order["quantity"] or e.notional_tl_filled == order["quote"]
        else:
            assert e.quantity_lots_filled == order["quantity"]
        self.finish(e.order_id, "FILLED", e.quantity_lots_filled, e.notional_tl_filled)

    def on_CANCELED(self, e):
        order = self.orders[e.order_id]
        assert order["state"] == "UNTRIGGERED" or order["id"] in self.resting[order["side"]]
        self.finish(e.order_id, "CANCELED", e.quantity_lots_filled, e.notional_tl_filled)

    def on_EXPIRED(self, e):
        order = self.orders[e.order_id]
        if order["quantity"] is not None and order["type"] not in ("MARKET", "STOP_LOSS", "TAKE_PROFIT"):
            assert e.quantity_lots_filled < order["quantity"]
        self.finish(e.order_id, "EXPIRED", e.quantity_lots_filled, e.notional_tl_filled)

    def on_TRIGGERED(self, e):
        self.end_executions()
        order = self.stops.pop(e.order_id)
        assert e.trigger_price_ticks in self.trade_prices
        on_rise = (order["side"] == BUY) == (order["type"] in ("STOP_LOSS", "STOP_LOSS_LIMIT"))
        stop = order["stop"]
        assert e.trigger_price_ticks >= stop if on_rise else e.trigger_price_ticks <= stop
        order["state"] = "OPEN"
        order["priority"] = e.sequence
        self.in_flight.append(order)

    def on_AMENDED(self, e):
        order = self.orders[e.order_id]
        assert order["id"] in self.resting[order["side"]]
        assert e.quantity_lots_remaining == e.quantity_lots - order["filled"] > 0
        order["price"] = e.price_ticks
        order["quantity"] = e.quantity_lots
        if not e.priority_kept:
            del self.resting[order["side"]][order["id"]]
            order["priority"] = e.sequence
            self.in_flight.append(order)

    def on_BOOK_DELTA(self, e):
        key = (e.side, e.price_ticks)
        assert self.depth.get(key, 0) != e.quantity_lots, "delta without a change"
        if e.quantity_lots:
            self.depth[key] = e.quantity_lots
        else:
            del self.depth[key]

    def on_MARKET_STATUS_CHANGED(self, e):
        pass

    def on_MARKET_STATUS_REJECTED(self, e):
        pass

    # ---------------------------------------------------------- comparison

    def check_against(self, book):
        """The book rebuilt from events equals the engine's snapshot and depth."""
        snapshot = book.snapshot()
        assert snapshot["sequence"] == self.sequence
        for side, rows in ((BUY, snapshot["bids"]), (SELL, snapshot["asks"])):
            mine = sorted(
                self.resting[side].values(),
                key=(lambda o: (-o["price"], o["priority"])) if side == BUY else (lambda o: (o["price"], o["priority"])),
            )
            assert [o["id"] for o in mine] == [row[0] for row in rows], f"{side} priority order differs"
            for order, row in zip(mine, rows):
                _, user_id, price, remaining, filled, notional, order_type, _ = row
                assert (user_id, price, filled, notional) == (order["user"], order["price"], order["filled"], order["notional"])
                assert filled + remaining == order["quantity"], "quantity not conserved"
        assert [row[0] for row in snapshot["stops"]] == sorted(self.stops, key=lambda i: self.orders[i]["priority"])
        bids, asks = book.depth()
        engine_depth = {(BUY, p): q for p, q in bids}
        engine_depth.update({(SELL, p): q for p, q in asks})
        assert engine_depth == self.depth, "depth rebuilt from BOOK_DELTA differs from the book"


class Harness:
    """Engine + reference + mirror (+ optional snapshot replica), in lockstep."""

    def __init__(self, stp_default="EXPIRE_TAKER"):
        self.book = OrderBook("TEST", stp_default=stp_default)
        self.reference = ReferenceBook(stp_default)
        self.mirror = EventMirror()
        self.replica = None

    def apply(self, command):
        events = self.book.apply(command)
        self.book.check_invariants()
        for event in events:
            assert event.timestamp == command.timestamp

        reference_events, reference_changed = self.reference.apply(command)
        others = [as_tuple(e) for e in events if e.kind != "BOOK_DELTA"]
        deltas = [e for e in events if e.kind == "BOOK_DELTA"]
        assert others == reference_events, (command, others, reference_events)
        assert len(deltas) == len(reference_changed)
        assert {(d.side, d.price_ticks, d.quantity_lots) for d in deltas} == reference_changed, command
        assert all(e.kind == "BOOK_DELTA" for e in events[len(events) - len(deltas):]), "deltas come last"

        self.mirror.apply(events)
        self.mirror.check_against(self.book)
        snapshot = self.book.snapshot()
        bids, asks = self.reference.book_rows()
        assert [(r[0], r[3]) for r in snapshot["bids"]] == bids
        assert [(r[0], r[3]) for r in snapshot["asks"]] == asks

        if self.replica is not None:
            replica_events = self.replica.apply(command)
            self.replica.check_invariants()
            assert [as_tuple(e) for e in replica_events] == [as_tuple(e) for e in events], command
        return events

    def restart_replica(self):
        """Snapshot the book through JSON and restore it: from now on the
        replica must emit exactly the engine's events."""
        snapshot = self.book.snapshot()
        restored = OrderBook.restore(json.loads(json.dumps(snapshot)))
        assert restored.snapshot() == snapshot
        self.replica = restored
