"""A seeded generator of command streams for the random runs and snapshot tests."""

import random

from matching.engine import (
    BUY,
    SELL,
    AmendOrder,
    CancelAll,
    CancelOrder,
    NewOrder,
    SetMarketStatus,
)

STP_CHOICES = [None, None, "NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]


class RandomCommands:
    """Commands on a narrow price range (95-105) with three users, so that
    orders cross, self-trade, trigger stops and chain often. With ``deep``,
    buy limits are mostly below sell limits and cancels and market orders
    are rarer, so books grow to dozens of orders over many levels and takers
    sweep several levels."""

    def __init__(self, seed, deep=False):
        self.rng = random.Random(seed)
        self.deep = deep
        self.weights = [55, 4, 6, 10, 6, 0.3, 10, 1, 4] if deep else [40, 8, 6, 12, 14, 1, 12, 2, 5]
        self.next_order_id = 1
        self.timestamp = 0
        self.issued = []  # (order_id, user_id) of every NEW command
        self.status = "TRADING"

    def __call__(self, book):
        """The next command; ``book`` is only read (last price, open ids)."""
        rng = self.rng
        last_price = book.last_trade_price_ticks
        self.timestamp += rng.randint(0, 3)
        kind = rng.choices(
            ["limit", "market", "maker", "stop", "cancel", "cancel_all", "amend", "status", "invalid"],
            self.weights,
        )[0]
        if kind == "status" or (self.status != "TRADING" and rng.random() < 0.2):
            if self.status != "TRADING" and rng.random() < 0.7:
                self.status = "TRADING"
            else:
                self.status = rng.choice(["TRADING", "HALTED", "CANCEL_ONLY", "POST_ONLY"])
            return SetMarketStatus(self.status, self.timestamp)
        if kind in ("cancel", "amend") and self.issued:
            order_id, user_id = self.pick_issued(book)
            if rng.random() < 0.1:
                user_id = rng.randint(1, 3)
            if kind == "cancel":
                return CancelOrder(order_id, user_id, self.timestamp)
            price = rng.choice([None, None, rng.randint(95, 105)])
            quantity = rng.choice([None, rng.randint(1, 12)]) if price else rng.randint(1, 12)
            if quantity is not None and rng.random() < 0.2:
                quantity = rng.randint(1, 4)
            return AmendOrder(order_id, user_id, price, quantity, self.timestamp)
        if kind == "cancel_all":
            return CancelAll(rng.randint(1, 3), self.timestamp)
        return self.new_order(kind, last_price, book)

    def pick_issued(self, book):
        """Mostly a recent order that is still open, sometimes any old one."""
        if self.rng.random() < 0.8:
            recent_open = [issued for issued in self.issued[-80:] if issued[0] in book]
            if recent_open:
                return self.rng.choice(recent_open)
        return self.rng.choice(self.issued)

    def new_order(self, kind, last_price, book):
        rng = self.rng
        order_id = self.next_order_id
        self.next_order_id += 1
        user_id = rng.randint(1, 3)
        side = rng.choice([BUY, SELL])
        fields = dict(stp_mode=rng.choice(STP_CHOICES), timestamp=self.timestamp)
        if kind == "limit":
            if self.deep:
                price_ticks = rng.randint(90, 103) if side == BUY else rng.randint(97, 110)
            else:
                price_ticks = rng.randint(95, 105)
            fields.update(
                time_in_force=rng.choice(["GTC", "GTC", "GTC", "IOC", "FOK"]),
                price_ticks=price_ticks,
                quantity_lots=rng.randint(1, 10) if rng.random() < 0.9 else rng.randint(20, 60),
            )
        elif kind == "maker":
            fields.update(order_type="LIMIT_MAKER", price_ticks=rng.randint(95, 105), quantity_lots=rng.randint(1, 10))
        elif kind == "market":
            fields.update(order_type="MARKET", **self.market_size())
        elif kind == "stop":
            order_type = rng.choice(["STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"])
            base = last_price or 100
            fields.update(order_type=order_type, stop_price_ticks=max(1, base + rng.randint(-4, 4)))
            if order_type.endswith("_LIMIT"):
                fields.update(
                    time_in_force=rng.choice(["GTC", "IOC", "FOK"]),
                    price_ticks=rng.randint(95, 105),
                    quantity_lots=rng.randint(1, 10),
                )
            else:
                fields.update(self.market_size())
        else:
            return self.invalid(order_id, user_id, side, book)
        self.issued.append((order_id, user_id))
        return NewOrder(order_id, user_id, side, **fields)

    def market_size(self):
        rng = self.rng
        choice = rng.random()
        if choice < 0.4:
            return {"quantity_lots": rng.randint(1, 15)}
        if choice < 0.7:
            return {"quote_limit_tl": rng.randint(50, 1500)}
        return {"quantity_lots": rng.randint(1, 15), "quote_limit_tl": rng.randint(50, 1500)}

    def invalid(self, order_id, user_id, side, book):
        rng = self.rng
        ts = self.timestamp
        options = [
            NewOrder(order_id, user_id, side, price_ticks=0, quantity_lots=5, timestamp=ts),
            NewOrder(order_id, user_id, side, price_ticks=100, quantity_lots=-1, timestamp=ts),
            NewOrder(order_id, user_id, side, price_ticks=100.5, quantity_lots=1, timestamp=ts),
            NewOrder(order_id, user_id, side, price_ticks=100, quantity_lots=True, timestamp=ts),
            NewOrder(order_id, user_id, "HOLD", price_ticks=100, quantity_lots=1, timestamp=ts),
            NewOrder(order_id, user_id, side, "ICEBERG", price_ticks=100, quantity_lots=1, timestamp=ts),
            NewOrder(order_id, user_id, side, time_in_force="GTD", price_ticks=100, quantity_lots=1, timestamp=ts),
            NewOrder(order_id, user_id, side, "MARKET", timestamp=ts),
            NewOrder(order_id, user_id, side, "MARKET", price_ticks=100, quantity_lots=1, timestamp=ts),
            NewOrder(order_id, user_id, side, "STOP_LOSS", quantity_lots=1, timestamp=ts),
            NewOrder(order_id, user_id, side, price_ticks=100, quantity_lots=1, stp_mode="WHATEVER", timestamp=ts),
            NewOrder(order_id, 0, side, price_ticks=100, quantity_lots=1, timestamp=ts),
            NewOrder(-order_id, user_id, side, price_ticks=100, quantity_lots=1, timestamp=ts),
            SetMarketStatus("CLOSED", ts),
        ]
        if self.issued:
            old_id, old_user = self.pick_issued(book)
            options.append(NewOrder(old_id, old_user, side, price_ticks=100, quantity_lots=1, timestamp=ts))
        return rng.choice(options)
