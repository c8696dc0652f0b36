"""Property test: random sequences of deposits, holds, increases, releases, settlements
(single, and batched with hold placement and release as the matcher does), withdrawals
and adjustments.

A Hypothesis state machine drives the real services against PostgreSQL and a
naive in-memory model side by side. After every step every balance and hold
in the database equals the model's; after every run all of wallet.invariants
holds. Where the model predicts a shortfall the service must refuse with
INSUFFICIENT_FUNDS and change nothing.
"""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal as D

import pytest
from django.db import transaction
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from exchange.core.errors import ApplicationError
from tests.factories import AssetFactory, UserFactory
from wallet.fees import fee_amount
from wallet.invariants import assert_ledger_sound
from wallet.models import Account, Hold
from wallet.services import (
    HoldPlace,
    HoldRelease,
    TradeSettlement,
    balance_adjust,
    deposit_credit,
    funds_hold,
    hold_increase,
    hold_release,
    ledger_apply,
    withdrawal_approve,
    withdrawal_complete,
    withdrawal_reject,
    withdrawal_request,
)

pytestmark = pytest.mark.django_db

USERS = range(3)
ASSETS = ["BTC", "USDT"]
PRECISION = {"BTC": 8, "USDT": 6}
LOT = D("0.0001")  # BTC per lot
TICK = D("0.01")  # USDT per BTC per tick
BUYER_FEE_RATE, SELLER_FEE_RATE = D("0.001"), D("0.002")

users = st.sampled_from(list(USERS))
assets = st.sampled_from(ASSETS)
units = st.integers(min_value=1, max_value=10**10)
# Percent of what is there to use: mostly fits, sometimes (over 100) does not.
shares = st.integers(min_value=1, max_value=110)


def amount(asset: str, count: int) -> D:
    return D(count).scaleb(-PRECISION[asset])


def share_of(asset: str, total: D, share: int) -> D:
    """``share`` percent of ``total``, rounded down to the asset's unit, at least one unit."""
    unit = D(1).scaleb(-PRECISION[asset])
    return max((total * share / 100).quantize(unit, rounding="ROUND_DOWN"), unit)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        self.asset = {
            "BTC": AssetFactory(code="BTC", precision=8),
            "USDT": AssetFactory(code="USDT", precision=6),
        }
        self.users = [UserFactory(username=f"prop{i}") for i in USERS]
        self.operator = UserFactory(username="prop-operator", is_staff=True)
        # The model.
        self.available: dict[tuple[int, str], D] = defaultdict(D)
        self.operator_accounts: dict[tuple[str, str], D] = defaultdict(D)
        self.holds: dict[str, list] = {}  # reference -> [user, asset, remaining, open]
        self.withdrawals: dict[int, list] = {}  # id -> [object, status]
        self.counter = 0
        for user in USERS:
            for asset, count in (("BTC", 10**9), ("USDT", 10**11)):
                self.deposit(user=user, asset=asset, count=count)

    def teardown(self):
        try:
            assert_ledger_sound()
        finally:
            transaction.set_rollback(True)
            self._atomic.__exit__(None, None, None)

    # -- helpers ---------------------------------------------------------------

    def _next(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}:{self.counter}"

    def _held(self, user: int, asset: str) -> D:
        return sum((h[2] for h in self.holds.values() if h[0] == user and h[1] == asset), D(0))

    def _open_holds(self, asset: str | None = None) -> list[str]:
        return sorted(ref for ref, h in self.holds.items() if h[3] and (asset is None or h[1] == asset)
                      and ref.startswith("order:"))

    def _refused(self, call) -> None:
        with pytest.raises(ApplicationError) as error:
            call()
        assert error.value.code == "INSUFFICIENT_FUNDS"

    # -- rules -----------------------------------------------------------------

    @rule(user=users, asset=assets, count=units)
    def deposit(self, user, asset, count):
        value = amount(asset, count)
        deposit_credit(user=self.users[user], asset=self.asset[asset], amount=value, txid=self._next("tx"),
                       actor=self.operator, memo="property test")
        self.available[user, asset] += value
        self.operator_accounts["EXTERNAL", asset] -= value

    @rule(user=users, asset=assets, share=shares)
    def hold(self, user, asset, share):
        value, reference = share_of(asset, self.available[user, asset], share), self._next("order")
        call = lambda: funds_hold(  # noqa: E731
            user=self.users[user], asset=self.asset[asset], amount=value, reference=reference
        )
        if value > self.available[user, asset]:
            return self._refused(call)
        call()
        self.available[user, asset] -= value
        self.holds[reference] = [user, asset, value, True]

    @precondition(lambda self: self._open_holds())
    @rule(data=st.data(), share=shares)
    def increase(self, data, share):
        reference = data.draw(st.sampled_from(self._open_holds()))
        user, asset, _, _ = self.holds[reference]
        value = share_of(asset, self.available[user, asset], share)
        call = lambda: hold_increase(reference=reference, amount=value)  # noqa: E731
        if value > self.available[user, asset]:
            return self._refused(call)
        call()
        self.available[user, asset] -= value
        self.holds[reference][2] += value

    @precondition(lambda self: self._open_holds())
    @rule(data=st.data(), everything=st.booleans(), close=st.booleans())
    def release(self, data, everything, close):
        reference = data.draw(st.sampled_from(self._open_holds()))
        user, asset, remaining, _ = self.holds[reference]
        if everything:
            value = None
        else:
            value = amount(asset, data.draw(st.integers(0, int(remaining.scaleb(PRECISION[asset])) + 10)))
            close = close and value == remaining
        call = lambda: hold_release(reference=reference, amount=value, close=close)  # noqa: E731
        if value is not None and value > remaining:
            return self._refused(call)
        call()
        released = remaining if value is None else value
        self.available[user, asset] += released
        self.holds[reference][2] -= released
        self.holds[reference][3] = not close

    @precondition(lambda self: self._open_holds("USDT") and self._open_holds("BTC"))
    @rule(data=st.data(), quantity_share=shares, notional_share=shares, close_after=st.booleans())
    def settle(self, data, quantity_share, notional_share, close_after):
        buy_ref = data.draw(st.sampled_from(self._open_holds("USDT")))
        sell_ref = data.draw(st.sampled_from(self._open_holds("BTC")))
        buyer, seller = self.holds[buy_ref][0], self.holds[sell_ref][0]
        # A price in whole ticks and a quantity in whole lots, sized from what the holds have left.
        lots = max(int(self.holds[sell_ref][2] * quantity_share / 100 / LOT), 1)
        ticks = max(int(self.holds[buy_ref][2] * notional_share / 100 / (lots * LOT * TICK)), 1)
        quantity, notional = lots * LOT, lots * LOT * ticks * TICK
        buyer_fee = fee_amount(received=quantity, rate=BUYER_FEE_RATE, precision=8)
        seller_fee = fee_amount(received=notional, rate=SELLER_FEE_RATE, precision=6)
        operations = [
            TradeSettlement(
                reference=self._next("trade"), base_asset_id=self.asset["BTC"].pk,
                quote_asset_id=self.asset["USDT"].pk, buyer_id=self.users[buyer].pk, seller_id=self.users[seller].pk,
                buyer_hold_reference=buy_ref, seller_hold_reference=sell_ref, quantity=quantity, notional=notional,
                buyer_fee=buyer_fee, seller_fee=seller_fee,
            )
        ]
        if close_after:
            operations += [HoldRelease(buy_ref, close=True), HoldRelease(sell_ref, close=True)]
        call = lambda: ledger_apply(operations)  # noqa: E731
        if notional > self.holds[buy_ref][2] or quantity > self.holds[sell_ref][2]:
            return self._refused(call)
        call()
        self.holds[buy_ref][2] -= notional
        self.holds[sell_ref][2] -= quantity
        self.available[seller, "USDT"] += notional - seller_fee
        self.available[buyer, "BTC"] += quantity - buyer_fee
        self.operator_accounts["FEES", "USDT"] += seller_fee
        self.operator_accounts["FEES", "BTC"] += buyer_fee
        if close_after:
            for reference in (buy_ref, sell_ref):
                user, asset, remaining, _ = self.holds[reference]
                self.available[user, asset] += remaining
                self.holds[reference][2:] = [D(0), False]

    @rule(buyer=users, seller=users, quantity_share=shares, notional_share=shares, partial=st.booleans())
    def order_and_fill(self, buyer, seller, quantity_share, notional_share, partial):
        """Both orders placed and matched in one matcher batch: holds placed, settled, closed."""
        buy_ref, sell_ref = self._next("order"), self._next("order")
        buy_hold = share_of("USDT", self.available[buyer, "USDT"], notional_share)
        sell_hold = share_of("BTC", self.available[seller, "BTC"], quantity_share)
        lots = max(int(sell_hold / LOT) // (2 if partial else 1), 1)
        ticks = max(int(buy_hold / (lots * LOT * TICK)) // (2 if partial else 1), 1)
        quantity, notional = lots * LOT, lots * LOT * ticks * TICK
        buyer_fee = fee_amount(received=quantity, rate=BUYER_FEE_RATE, precision=8)
        seller_fee = fee_amount(received=notional, rate=SELLER_FEE_RATE, precision=6)
        call = lambda: ledger_apply([  # noqa: E731
            HoldPlace(buy_ref, self.users[buyer].pk, self.asset["USDT"].pk, buy_hold),
            HoldPlace(sell_ref, self.users[seller].pk, self.asset["BTC"].pk, sell_hold),
            TradeSettlement(
                reference=self._next("trade"), base_asset_id=self.asset["BTC"].pk,
                quote_asset_id=self.asset["USDT"].pk, buyer_id=self.users[buyer].pk, seller_id=self.users[seller].pk,
                buyer_hold_reference=buy_ref, seller_hold_reference=sell_ref, quantity=quantity, notional=notional,
                buyer_fee=buyer_fee, seller_fee=seller_fee,
            ),
            HoldRelease(buy_ref, close=True),
            HoldRelease(sell_ref, close=True),
        ])
        if (buy_hold > self.available[buyer, "USDT"] or sell_hold > self.available[seller, "BTC"]
                or notional > buy_hold or quantity > sell_hold):
            return self._refused(call)
        call()
        self.available[buyer, "USDT"] += -notional
        self.available[seller, "BTC"] += -quantity
        self.available[seller, "USDT"] += notional - seller_fee
        self.available[buyer, "BTC"] += quantity - buyer_fee
        self.operator_accounts["FEES", "USDT"] += seller_fee
        self.operator_accounts["FEES", "BTC"] += buyer_fee
        self.holds[buy_ref] = [buyer, "USDT", D(0), False]
        self.holds[sell_ref] = [seller, "BTC", D(0), False]

    @rule(user=users, asset=assets, share=shares)
    def withdraw(self, user, asset, share):
        value = share_of(asset, self.available[user, asset], share)
        call = lambda: withdrawal_request(user=self.users[user], asset=self.asset[asset], amount=value,  # noqa: E731
                                          address="addr")
        if value > self.available[user, asset]:
            return self._refused(call)
        withdrawal = call()
        self.available[user, asset] -= value
        self.holds[withdrawal.hold_reference] = [user, asset, value, True]
        self.withdrawals[withdrawal.pk] = [withdrawal, "REQUESTED"]

    def _withdrawals(self, status: str) -> list[int]:
        return sorted(pk for pk, (_, current) in self.withdrawals.items() if current == status)

    @precondition(lambda self: self._withdrawals("REQUESTED"))
    @rule(data=st.data(), approve=st.booleans())
    def review(self, data, approve):
        pk = data.draw(st.sampled_from(self._withdrawals("REQUESTED")))
        withdrawal = self.withdrawals[pk][0]
        user, asset, remaining, _ = self.holds[withdrawal.hold_reference]
        if approve:
            withdrawal_approve(withdrawal=withdrawal, actor=self.operator, reason="ok")
            self.operator_accounts["WITHDRAWALS_PENDING", asset] += remaining
        else:
            withdrawal_reject(withdrawal=withdrawal, actor=self.operator, reason="no")
            self.available[user, asset] += remaining
        self.holds[withdrawal.hold_reference][2:] = [D(0), False]
        self.withdrawals[pk][1] = "APPROVED" if approve else "REJECTED"

    @precondition(lambda self: self._withdrawals("APPROVED"))
    @rule(data=st.data())
    def complete(self, data):
        pk = data.draw(st.sampled_from(self._withdrawals("APPROVED")))
        withdrawal = self.withdrawals[pk][0]
        withdrawal_complete(withdrawal=withdrawal, actor=self.operator, txid=self._next("out"), reason="sent")
        asset = withdrawal.asset.code
        self.operator_accounts["WITHDRAWALS_PENDING", asset] -= withdrawal.amount
        self.operator_accounts["EXTERNAL", asset] += withdrawal.amount
        self.withdrawals[pk][1] = "COMPLETED"

    @rule(user=users, asset=assets, share=shares, credit=st.booleans())
    def adjust(self, user, asset, share, credit):
        value = share_of(asset, self.available[user, asset], share) * (1 if credit else -1)
        call = lambda: balance_adjust(user=self.users[user], asset=self.asset[asset], amount=value,  # noqa: E731
                                      actor=self.operator, reason="property test")
        if self.available[user, asset] + value < 0:
            return self._refused(call)
        call()
        self.available[user, asset] += value
        self.operator_accounts["ADJUSTMENTS", asset] -= value

    # -- after every step --------------------------------------------------------

    @invariant()
    def database_matches_model(self):
        codes = {a.pk: code for code, a in self.asset.items()}
        index = {u.pk: i for i, u in enumerate(self.users)}
        actual = {}
        for user_id, asset_id, kind, balance in Account.objects.values_list("user_id", "asset_id", "kind", "balance"):
            owner = index[user_id] if user_id else None
            actual[owner, codes[asset_id], kind] = balance
        expected = {}
        for (user, asset), value in self.available.items():
            expected[user, asset, "AVAILABLE"] = value
            expected[user, asset, "HELD"] = self._held(user, asset)
        for (kind, asset), value in self.operator_accounts.items():
            expected[None, asset, kind] = value
        assert {k: v for k, v in actual.items() if v} == {k: v for k, v in expected.items() if v}
        holds = {ref: [index[u], codes[a], remaining, status == "OPEN"]
                 for ref, u, a, remaining, status in
                 Hold.objects.values_list("reference", "user_id", "asset_id", "amount_remaining", "status")}
        assert holds == self.holds


def test_random_ledger_histories_keep_every_invariant():
    """Runs LedgerMachine: 30 random histories of up to 30 steps each."""
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=30,
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
