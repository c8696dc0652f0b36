"""A naive reference matcher, written from docs/ENGINE.md, to check the engine.

Obviously correct rather than fast: resting orders in one plain list, the
next maker found by sorting every candidate on every step, FOK decided by
running the order as IOC on a deep copy, stops found by scanning a list.
It emits the same events as the engine, as plain tuples
``(kind, sequence, timestamp, *fields)``, except BOOK_DELTA: for those it
returns the set of ``(side, price_ticks, quantity_lots)`` levels whose
aggregate changed, computed by diffing the depth before and after.
"""

import copy

BUY, SELL = "BUY", "SELL"
LIMIT, MARKET, LIMIT_MAKER = "LIMIT", "MARKET", "LIMIT_MAKER"
STOP_LOSS, STOP_LOSS_LIMIT = "STOP_LOSS", "STOP_LOSS_LIMIT"
TAKE_PROFIT, TAKE_PROFIT_LIMIT = "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"
TYPES = {LIMIT, MARKET, LIMIT_MAKER, STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT}
PRICED = {LIMIT, LIMIT_MAKER, STOP_LOSS_LIMIT, TAKE_PROFIT_LIMIT}
STOPS = {STOP_LOSS, STOP_LOSS_LIMIT, TAKE_PROFIT, TAKE_PROFIT_LIMIT}
STP_MODES = {"NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"}
STATUSES = {"TRADING", "HALTED", "CANCEL_ONLY", "POST_ONLY"}


def positive(value):
    return type(value) is int and value > 0


def absent(value):
    return value is None or (type(value) is int and value == 0)


class ReferenceBook:
    def __init__(self, stp_default="EXPIRE_TAKER", status="TRADING"):
        self.stp_default = stp_default
        self.status = status
        self.sequence = 0
        self.last_price = None
        self.resting = []  # dicts; "priority" orders FIFO within a price
        self.stops = []  # dicts with "accepted_sequence"
        self.priority_counter = 0

    # --------------------------------------------------------------- helpers

    def emit(self, kind, *fields):
        self.sequence += 1
        self.events.append((kind, self.sequence, self.timestamp, *fields))

    def depth(self):
        levels = {}
        for order in self.resting:
            key = (order["side"], order["price"])
            levels[key] = levels.get(key, 0) + order["remaining"]
        return levels

    def open_order(self, order_id):
        for order in self.resting + self.stops:
            if order["id"] == order_id:
                return order
        return None

    def crosses(self, side, price):
        return any(
            (o["price"] <= price if side == BUY else o["price"] >= price)
            for o in self.resting
            if o["side"] != side
        )

    def next_maker(self, side):
        makers = [o for o in self.resting if o["side"] != side]
        if not makers:
            return None
        if side == BUY:
            return min(makers, key=lambda o: (o["price"], o["priority"]))
        return min(makers, key=lambda o: (-o["price"], o["priority"]))

    def rest(self, order):
        self.priority_counter += 1
        order["priority"] = self.priority_counter
        self.resting.append(order)

    # -------------------------------------------------------------- commands

    def apply(self, command):
        """Return (events without BOOK_DELTA, set of changed levels)."""
        self.events = []
        self.timestamp = command.timestamp
        before = self.depth()
        handler = getattr(self, "on_" + type(command).__name__)
        handler(command)
        after = self.depth()
        changed = set()
        for key in set(before) | set(after):
            if before.get(key, 0) != after.get(key, 0):
                changed.add((key[0], key[1], after.get(key, 0)))
        self.sequence += len(changed)
        return self.events, changed

    def on_NewOrder(self, c):
        reason = self.validate(c)
        if reason is None and self.open_order(c.order_id) is not None:
            reason = "DUPLICATE_ORDER_ID"
        if reason is None and self.status == "HALTED":
            reason = "MARKET_HALTED"
        if reason is None and self.status == "CANCEL_ONLY":
            reason = "MARKET_CANCEL_ONLY"
        if reason is None and self.status == "POST_ONLY" and c.order_type not in (LIMIT, LIMIT_MAKER):
            reason = "MARKET_POST_ONLY"
        if reason is None and c.order_type in (LIMIT, LIMIT_MAKER):
            if self.crosses(c.side, c.price_ticks) and (
                c.order_type == LIMIT_MAKER or self.status == "POST_ONLY"
            ):
                reason = "POST_ONLY_WOULD_TAKE"
        if reason is None and c.order_type in STOPS and self.would_trigger(
            c.side, c.order_type, c.stop_price_ticks
        ):
            reason = "WOULD_TRIGGER_IMMEDIATELY"
        if reason is not None:
            self.emit("REJECTED", c.order_id, c.user_id, reason, 0, 0)
            return

        market_like = c.order_type in (MARKET, STOP_LOSS, TAKE_PROFIT)
        order = {
            "id": c.order_id,
            "user": c.user_id,
            "side": c.side,
            "type": c.order_type,
            "tif": None if market_like else c.time_in_force,
            "price": None if market_like else c.price_ticks,
            "stop": c.stop_price_ticks or None,
            "quantity": c.quantity_lots or None,
            "quote": c.quote_limit_tl or None,
            "stp": c.stp_mode if c.stp_mode is not None else self.stp_default,
        }
        status = "UNTRIGGERED" if c.order_type in STOPS else "NEW"
        self.emit(
            "ACCEPTED", order["id"], order["user"], order["side"], order["type"], order["tif"],
            order["price"], order["stop"], order["quantity"], order["quote"], order["stp"], status,
        )
        if status == "UNTRIGGERED":
            order["accepted_sequence"] = self.sequence
            self.stops.append(order)
            return
        traded = self.execute(order, 0, 0)
        if traded:
            self.run_stops()

    def validate(self, c):
        if not positive(c.order_id):
            return "INVALID_ORDER_ID"
        if not positive(c.user_id):
            return "INVALID_USER_ID"
        if c.side not in (BUY, SELL):
            return "INVALID_SIDE"
        if not isinstance(c.order_type, str) or c.order_type not in TYPES:
            return "INVALID_ORDER_TYPE"
        if c.order_type in PRICED:
            if c.order_type == LIMIT_MAKER:
                if c.time_in_force != "GTC":
                    return "INVALID_TIME_IN_FORCE"
            elif c.time_in_force not in ("GTC", "IOC", "FOK"):
                return "INVALID_TIME_IN_FORCE"
            if not positive(c.price_ticks):
                return "INVALID_PRICE"
        elif not absent(c.price_ticks):
            return "INVALID_PRICE"
        if c.order_type in STOPS:
            if not positive(c.stop_price_ticks):
                return "INVALID_STOP_PRICE"
        elif not absent(c.stop_price_ticks):
            return "INVALID_STOP_PRICE"
        if c.order_type in PRICED:
            if not positive(c.quantity_lots):
                return "INVALID_QUANTITY"
            if not absent(c.quote_limit_tl):
                return "INVALID_QUOTE_LIMIT"
        else:
            if not (absent(c.quantity_lots) or positive(c.quantity_lots)):
                return "INVALID_QUANTITY"
            if not (absent(c.quote_limit_tl) or positive(c.quote_limit_tl)):
                return "INVALID_QUOTE_LIMIT"
            if absent(c.quantity_lots) and absent(c.quote_limit_tl):
                return "QUANTITY_OR_QUOTE_LIMIT_REQUIRED"
        if c.stp_mode is not None and c.stp_mode not in STP_MODES:
            return "INVALID_STP_MODE"
        return None

    def on_CancelOrder(self, c):
        if self.status == "HALTED":
            self.emit("CANCEL_REJECTED", c.order_id, c.user_id, "MARKET_HALTED")
            return
        order = self.open_order(c.order_id)
        if order is None or order["user"] != c.user_id:
            self.emit("CANCEL_REJECTED", c.order_id, c.user_id, "UNKNOWN_ORDER")
            return
        self.cancel(order, "CANCEL")

    def cancel(self, order, reason):
        if order in self.stops:
            self.stops.remove(order)
            self.emit("CANCELED", order["id"], order["user"], 0, 0, reason)
        else:
            self.resting.remove(order)
            self.emit("CANCELED", order["id"], order["user"], order["filled"], order["notional"], reason)

    def on_CancelAll(self, c):
        if self.status == "HALTED":
            self.emit("CANCEL_REJECTED", None, c.user_id, "MARKET_HALTED")
            return
        mine = [o for o in self.resting + self.stops if o["user"] == c.user_id]
        for order in sorted(mine, key=lambda o: o["id"]):
            self.cancel(order, "CANCEL_ALL")

    def on_AmendOrder(self, c):
        order = self.open_order(c.order_id) if type(c.order_id) is int else None
        reason = None
        if self.status == "HALTED":
            reason = "MARKET_HALTED"
        elif self.status == "CANCEL_ONLY":
            reason = "MARKET_CANCEL_ONLY"
        elif order is None or order["user"] != c.user_id:
            reason = "UNKNOWN_ORDER"
        elif order in self.stops:
            reason = "AMEND_NOT_SUPPORTED"
        elif c.price_ticks is not None and not positive(c.price_ticks):
            reason = "INVALID_PRICE"
        elif c.quantity_lots is not None and not positive(c.quantity_lots):
            reason = "INVALID_QUANTITY"
        elif c.price_ticks is None and c.quantity_lots is None:
            reason = "NOTHING_TO_AMEND"
        elif c.quantity_lots is not None and c.quantity_lots <= order["filled"]:
            reason = "QUANTITY_NOT_ABOVE_FILLED"
        if reason is None:
            price = order["price"] if c.price_ticks is None else c.price_ticks
            old_total = order["remaining"] + order["filled"]
            total = old_total if c.quantity_lots is None else c.quantity_lots
            keeps_priority = price == order["price"] and total <= old_total
            if price == order["price"] and total == old_total:
                reason = "NOTHING_TO_AMEND"
            elif (
                not keeps_priority
                and self.crosses(order["side"], price)
                and (order["type"] == LIMIT_MAKER or self.status == "POST_ONLY")
            ):
                reason = "POST_ONLY_WOULD_TAKE"
        if reason is not None:
            self.emit("AMEND_REJECTED", c.order_id, c.user_id, reason)
            return

        remaining = total - order["filled"]
        if keeps_priority:
            order["remaining"] = remaining
            self.emit("AMENDED", order["id"], order["user"], price, total, remaining, True)
            return
        self.resting.remove(order)
        self.emit("AMENDED", order["id"], order["user"], price, total, remaining, False)
        order["price"] = price
        order["quantity"] = total
        order["tif"] = "GTC"
        if self.execute(order, order["filled"], order["notional"]):
            self.run_stops()

    def on_SetMarketStatus(self, c):
        if c.status not in STATUSES:
            self.emit("MARKET_STATUS_REJECTED", c.status, "INVALID_STATUS")
            return
        previous, self.status = self.status, c.status
        self.emit("MARKET_STATUS_CHANGED", c.status, previous)

    # -------------------------------------------------------------- matching

    def execute(self, order, filled, notional):
        """Run ``order`` as a taker and settle it. Returns whether it traded."""
        if order["price"] is None:
            return self.execute_market(order)
        if order["tif"] == "FOK":
            trial = copy.deepcopy(self)
            trial.events = []
            trial_order = dict(order, tif="IOC")
            trial.match(trial_order, order["quantity"] - filled, filled, notional)
            if trial_order["filled_after"] != order["quantity"]:
                self.emit("EXPIRED", order["id"], order["user"], filled, notional, "FOK_NOT_FILLABLE")
                return False
        filled_before = filled
        remaining, filled, notional, reason = self.match(order, order["quantity"] - filled, filled, notional)
        if remaining == 0:
            self.emit("FILLED", order["id"], order["user"], filled, notional)
        elif reason == "SELF_TRADE_PREVENTION":
            self.emit("EXPIRED", order["id"], order["user"], filled, notional, reason)
        elif order["tif"] == "GTC":
            if filled != filled_before:
                self.emit("PARTIALLY_FILLED", order["id"], order["user"], filled, notional, remaining)
            order.update(remaining=remaining, filled=filled, notional=notional)
            self.rest(order)
        else:
            self.emit("EXPIRED", order["id"], order["user"], filled, notional, "IOC_REMAINDER")
        return filled != filled_before

    def execute_market(self, order):
        quantity, quote = order["quantity"], order["quote"]
        remaining, filled, notional, reason = self.match(order, quantity, 0, 0)
        if (quantity is not None and remaining == 0) or (quote is not None and notional == quote):
            self.emit("FILLED", order["id"], order["user"], filled, notional)
        else:
            self.emit("EXPIRED", order["id"], order["user"], filled, notional, reason)
        return filled > 0

    def match(self, order, remaining, filled, notional):
        """Trade ``order`` against makers one at a time. ``remaining`` None
        means no quantity limit (a MARKET order by quote)."""
        side, limit, quote = order["side"], order["price"], order["quote"]
        reason = None
        while remaining is None or remaining > 0:
            maker = self.next_maker(side)
            if maker is None:
                reason = "NO_LIQUIDITY"
                break
            price = maker["price"]
            if limit is not None and (price > limit if side == BUY else price < limit):
                break
            if quote is not None and quote - notional < price:
                reason = "QUOTE_LIMIT_REACHED"
                break
            if maker["user"] == order["user"] and order["stp"] != "NONE":
                if order["stp"] == "EXPIRE_TAKER":
                    reason = "SELF_TRADE_PREVENTION"
                    break
                self.resting.remove(maker)
                self.emit(
                    "EXPIRED", maker["id"], maker["user"], maker["filled"], maker["notional"],
                    "SELF_TRADE_PREVENTION",
                )
                if order["stp"] == "EXPIRE_BOTH":
                    reason = "SELF_TRADE_PREVENTION"
                    break
                continue
            lots = maker["remaining"] if remaining is None else min(maker["remaining"], remaining)
            if quote is not None:
                lots = min(lots, (quote - notional) // price)
            self.emit("TRADE", price, lots, maker["id"], maker["user"], order["id"], order["user"], side)
            self.last_price = price
            maker["remaining"] -= lots
            maker["filled"] += lots
            maker["notional"] += lots * price
            if remaining is not None:
                remaining -= lots
            filled += lots
            notional += lots * price
            if maker["remaining"] == 0:
                self.resting.remove(maker)
                self.emit("FILLED", maker["id"], maker["user"], maker["filled"], maker["notional"])
            else:
                self.emit(
                    "PARTIALLY_FILLED", maker["id"], maker["user"], maker["filled"], maker["notional"],
                    maker["remaining"],
                )
        order["filled_after"] = filled
        return remaining, filled, notional, reason

    # ----------------------------------------------------------------- stops

    def would_trigger(self, side, order_type, stop_price):
        if self.last_price is None:
            return False
        on_rise = (side == BUY) == (order_type in (STOP_LOSS, STOP_LOSS_LIMIT))
        return self.last_price >= stop_price if on_rise else self.last_price <= stop_price

    def run_stops(self):
        queue = []
        self.collect_triggered(queue)
        while queue:
            stop, trigger_price = queue.pop(0)
            self.emit("TRIGGERED", stop["id"], stop["user"], trigger_price)
            stop.update(filled=0, notional=0)
            self.execute(stop, 0, 0)
            self.collect_triggered(queue)

    def collect_triggered(self, queue):
        fired = [s for s in self.stops if self.would_trigger(s["side"], s["type"], s["stop"])]
        for stop in sorted(fired, key=lambda s: s["accepted_sequence"]):
            self.stops.remove(stop)
            queue.append((stop, self.last_price))

    # -------------------------------------------------------------- snapshot

    def book_rows(self):
        """(bids, asks) as lists of (order_id, remaining), in priority order."""
        bids = sorted((o for o in self.resting if o["side"] == BUY), key=lambda o: (-o["price"], o["priority"]))
        asks = sorted((o for o in self.resting if o["side"] == SELL), key=lambda o: (o["price"], o["priority"]))
        return [(o["id"], o["remaining"]) for o in bids], [(o["id"], o["remaining"]) for o in asks]
