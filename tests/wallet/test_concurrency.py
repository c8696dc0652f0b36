"""Real concurrency on real PostgreSQL: several threads, each with its own connection,
hammering the same accounts. No lost update (final balances are exact), no negative
balance, no deadlock (PostgreSQL would abort one thread with an error)."""

import threading
from decimal import Decimal as D

import pytest
from django.db import connection

from exchange.core.errors import ApplicationError
from tests.wallet.conftest import balances, operator_balance
from wallet.invariants import assert_ledger_sound
from wallet.models import AccountKind, Deposit, Hold
from wallet.services import (
    HoldPlace,
    HoldRelease,
    TradeSettlement,
    deposit_credit,
    funds_hold,
    hold_release,
    ledger_apply,
    withdrawal_approve,
    withdrawal_request,
)

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 4


def run_concurrently(work, threads: int = THREADS) -> list:
    """Run ``work(index)`` in ``threads`` threads released together; return their results.

    Any exception in a thread fails the test (a deadlock surfaces as one).
    """
    barrier = threading.Barrier(threads)
    results: list = [None] * threads
    errors: list[BaseException] = []

    def runner(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = work(index)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
        finally:
            connection.close()

    workers = [threading.Thread(target=runner, args=(index,)) for index in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not any(worker.is_alive() for worker in workers), "a thread hung"
    assert not errors, f"threads raised: {errors!r}"
    return results


def test_concurrent_holds_and_releases_on_one_account_lose_nothing(alice, usdt, fund):
    """Threads place 3 USDT holds on the same 100 USDT, keep every third and release the rest.

    Some placements must fail for lack of funds; every success and failure is
    accounted for: available + held stays 100 and held equals the open holds.
    """
    fund(alice, usdt, "100")
    iterations = 25

    def work(thread: int) -> tuple[int, int]:
        kept = refused = 0
        for n in range(iterations):
            reference = f"order:{thread}:{n}"
            try:
                funds_hold(user=alice, asset=usdt, amount=D("3"), reference=reference)
            except ApplicationError as error:
                assert error.code == "INSUFFICIENT_FUNDS"
                refused += 1
                continue
            if n % 3 == 0:
                kept += 1
            else:
                hold_release(reference=reference, close=True)
        return kept, refused

    results = run_concurrently(work)

    kept = sum(k for k, _ in results)
    assert kept == Hold.objects.filter(status="OPEN").count()
    available, held = balances(alice, usdt)
    assert held == 3 * kept and available + held == D("100") and available >= 0
    # 36 holds were meant to be kept but only 33 fit in 100 USDT: at least 3 were refused.
    assert kept <= 33 and sum(refused for _, refused in results) >= 3
    assert_ledger_sound()


def test_cross_user_settlements_in_opposite_orders_do_not_deadlock(market, alice, bob, btc, usdt, fund):
    """Half the threads settle alice-buys-from-bob, half bob-buys-from-alice, each trade in one batch.

    Locks are taken in ascending id order whoever is buyer, so the opposite
    orders cannot deadlock; final balances are exactly what the trades imply.
    """
    for user in (alice, bob):
        fund(user, usdt, "100000")
        fund(user, btc, "10")
    iterations = 15

    def work(thread: int) -> None:
        buyer, seller = (alice, bob) if thread % 2 == 0 else (bob, alice)
        for n in range(iterations):
            buy, sell = f"order:{thread}:{n}:buy", f"order:{thread}:{n}:sell"
            ledger_apply([
                HoldPlace(buy, buyer.pk, usdt.pk, D("110")),
                HoldPlace(sell, seller.pk, btc.pk, D("0.01")),
                TradeSettlement(
                    reference=f"trade:{thread}:{n}", base_asset_id=btc.pk, quote_asset_id=usdt.pk,
                    buyer_id=buyer.pk, seller_id=seller.pk, buyer_hold_reference=buy, seller_hold_reference=sell,
                    quantity=D("0.01"), notional=D("100"), buyer_fee=D("0.00001"), seller_fee=D("0.1"),
                ),
                HoldRelease(buy, close=True),
                HoldRelease(sell, close=True),
            ])

    run_concurrently(work)

    trades_each_way = iterations * THREADS // 2
    # Each user bought and sold the same number of trades: they lose only the fees.
    for user in (alice, bob):
        assert balances(user, usdt) == (D("100000") - trades_each_way * D("0.1"), D("0"))
        assert balances(user, btc) == (D("10") - trades_each_way * D("0.00001"), D("0"))
    assert operator_balance(usdt, AccountKind.FEES) == 2 * trades_each_way * D("0.1")
    assert_ledger_sound()


def test_the_same_deposit_txid_from_several_threads_credits_once(alice, btc):
    """Concurrent webhook retries with one txid: exactly one thread credits, the others see it."""
    results = run_concurrently(
        lambda _: deposit_credit(user=alice, asset=btc, amount=D("1"), txid="0xsame",
                                 source=Deposit.Source.CUSTODY)[1]
    )

    assert sorted(results) == [False, False, False, True]
    assert balances(alice, btc) == (D("1"), D("0"))
    assert_ledger_sound()


def test_two_operators_approving_one_withdrawal_move_the_money_once(alice, btc, operator, fund):
    """The withdrawal row is locked during a transition: one approval wins, the others are refused."""
    fund(alice, btc, "1")
    withdrawal = withdrawal_request(user=alice, asset=btc, amount=D("1"), address="bc1q")

    def work(_):
        try:
            withdrawal_approve(withdrawal=withdrawal, actor=operator, reason="ok")
            return "approved"
        except ApplicationError as error:
            return error.code

    results = run_concurrently(work)

    assert sorted(results) == ["INVALID_WITHDRAWAL_STATE"] * 3 + ["approved"]
    assert operator_balance(btc, AccountKind.WITHDRAWALS_PENDING) == D("1")
    assert_ledger_sound()
