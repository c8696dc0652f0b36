"""Property-based tests: a hypothesis state machine over random command streams.

Every command goes through ``Harness.apply`` (tests/matching/engine/harness.py),
which after every step checks the book's invariants (not crossed, level
totals, index, stops), that the engine's events equal the naive reference
matcher's, and, through an event mirror: no order fills beyond its quantity
or quote limit, quantity is conserved, trades happen at the maker's price,
price-time priority holds, exactly one terminal event per order, and the
depth rebuilt from BOOK_DELTAs is the book's. At random points a replica is
restored from a JSON snapshot and must then emit exactly the same events.
"""

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from matching.engine import (
    AmendOrder,
    CancelAll,
    CancelOrder,
    NewOrder,
    SetMarketStatus,
)

from .harness import Harness

sides = st.sampled_from(["BUY", "SELL"])
prices = st.integers(96, 104)
quantities = st.integers(1, 8)
users = st.integers(1, 3)
stp_modes = st.sampled_from([None, "NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"])
times_in_force = st.sampled_from(["GTC", "GTC", "IOC", "FOK"])
quote_limits = st.none() | st.integers(40, 1200)
picks = st.integers(0, 10**6)

LIMIT = dict(user=users, side=sides, price=prices, quantity=quantities, tif=times_in_force, stp=stp_modes)
LIMIT_MAKER = dict(user=users, side=sides, price=prices, quantity=quantities)
MARKET = dict(user=users, side=sides, quantity=st.none() | quantities, quote=quote_limits, stp=stp_modes)
STOP = dict(
    user=users,
    side=sides,
    order_type=st.sampled_from(["STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"]),
    offset=st.integers(-4, 4),
    price=prices,
    quantity=quantities,
    quote=quote_limits,
    tif=times_in_force,
    stp=stp_modes,
)
CANCEL = dict(pick=picks, foreign=st.booleans())
CANCEL_ALL = dict(user=users)
AMEND = dict(pick=picks, price=st.none() | prices, quantity=st.none() | st.integers(1, 10))
EPISODE_ACTIONS = {
    "limit": LIMIT, "limit_maker": LIMIT_MAKER, "market": MARKET, "stop": STOP,
    "cancel": CANCEL, "amend": AMEND, "cancel_all": CANCEL_ALL,
}


class EngineMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.harness = None
        self.next_order_id = 1
        self.timestamp = 0
        self.issued = []  # (order_id, user_id) of every NEW sent

    @initialize(stp_default=st.sampled_from(["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]))
    def start(self, stp_default):
        self.harness = Harness(stp_default)

    def send(self, command):
        self.harness.apply(command)

    def new(self, user_id, side, **fields):
        order_id = self.next_order_id
        self.next_order_id += 1
        self.timestamp += 1
        self.issued.append((order_id, user_id))
        self.send(NewOrder(order_id, user_id, side, timestamp=self.timestamp, **fields))

    @rule(**LIMIT)
    def limit(self, user, side, price, quantity, tif, stp):
        self.new(user, side, order_type="LIMIT", time_in_force=tif, price_ticks=price, quantity_lots=quantity, stp_mode=stp)

    @rule(**LIMIT_MAKER)
    def limit_maker(self, user, side, price, quantity):
        self.new(user, side, order_type="LIMIT_MAKER", price_ticks=price, quantity_lots=quantity)

    @rule(**MARKET)
    def market(self, user, side, quantity, quote, stp):
        self.new(user, side, order_type="MARKET", quantity_lots=quantity, quote_limit_tl=quote, stp_mode=stp)

    @rule(**STOP)
    def stop(self, user, side, order_type, offset, price, quantity, quote, tif, stp):
        stop_price = (self.harness.book.last_trade_price_ticks or 100) + offset
        if order_type.endswith("_LIMIT"):
            fields = dict(time_in_force=tif, price_ticks=price, quantity_lots=quantity)
        else:
            fields = dict(quantity_lots=quantity if quote is None or offset % 2 else None, quote_limit_tl=quote)
        self.new(user, side, order_type=order_type, stop_price_ticks=stop_price, stp_mode=stp, **fields)

    def pick_issued(self, pick):
        """Three times in four an order that is still open, else any issued one."""
        still_open = [issued for issued in self.issued if issued[0] in self.harness.book]
        if still_open and pick % 4:
            return still_open[pick % len(still_open)]
        return self.issued[pick % len(self.issued)]

    @precondition(lambda self: self.issued)
    @rule(**CANCEL)
    def cancel(self, pick, foreign):
        order_id, user_id = self.pick_issued(pick)
        self.timestamp += 1
        self.send(CancelOrder(order_id, user_id % 3 + 1 if foreign else user_id, self.timestamp))

    @rule(**CANCEL_ALL)
    def cancel_all(self, user):
        self.timestamp += 1
        self.send(CancelAll(user, self.timestamp))

    @precondition(lambda self: self.issued)
    @rule(**AMEND)
    def amend(self, pick, price, quantity):
        order_id, user_id = self.pick_issued(pick)
        self.timestamp += 1
        self.send(AmendOrder(order_id, user_id, price, quantity, self.timestamp))

    @rule(user=users, side=sides, depth=st.integers(0, 3), quantity=quantities, stp=stp_modes)
    def aggressive_limit(self, user, side, depth, quantity, stp):
        """A limit priced through the opposite best, so that it trades."""
        book = self.harness.book
        if side == "BUY":
            price = (book.best_ask() or 100) + depth
        else:
            price = (book.best_bid() or 100) - depth
        self.new(user, side, order_type="LIMIT", price_ticks=price, quantity_lots=quantity, stp_mode=stp)

    @rule(data=st.data(), status=st.sampled_from(["HALTED", "CANCEL_ONLY", "POST_ONLY", "PAUSED"]))
    def status_episode(self, data, status):
        """A few commands under another status (PAUSED is not a status and
        is rejected), then back to TRADING."""
        self.send(SetMarketStatus(status, self.timestamp))
        for _ in range(data.draw(st.integers(1, 3))):
            name = data.draw(st.sampled_from(["limit", "limit_maker", "market", "stop", "cancel", "amend", "cancel_all"]))
            if name in ("cancel", "amend") and not self.issued:
                continue
            arguments = data.draw(st.fixed_dictionaries(EPISODE_ACTIONS[name]))
            getattr(self, name)(**arguments)
        self.send(SetMarketStatus("TRADING", self.timestamp))

    @precondition(lambda self: self.issued)
    @rule(pick=picks, side=sides)
    def duplicate_id(self, pick, side):
        order_id, user_id = self.pick_issued(pick)
        self.send(NewOrder(order_id, user_id, side, price_ticks=100, quantity_lots=1, timestamp=self.timestamp))

    @rule()
    def snapshot_and_restore_replica(self):
        self.harness.restart_replica()

    @invariant()
    def book_is_consistent(self):
        if self.harness is not None:
            self.harness.book.check_invariants()


EngineMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineMachine = EngineMachine.TestCase
