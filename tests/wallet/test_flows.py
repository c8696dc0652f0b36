"""Deposits, withdrawals and adjustments, worked through with exact balances."""

from decimal import Decimal as D

import pytest

from exchange.core.errors import ApplicationError
from tests.wallet.conftest import balances, operator_balance
from wallet.invariants import assert_ledger_sound
from wallet.models import AccountKind, Deposit, Hold, LedgerTransaction, TransactionKind, Withdrawal
from wallet.services import (
    balance_adjust,
    deposit_credit,
    withdrawal_approve,
    withdrawal_complete,
    withdrawal_reject,
    withdrawal_request,
)

pytestmark = pytest.mark.django_db

EXTERNAL, PENDING = AccountKind.EXTERNAL, AccountKind.WITHDRAWALS_PENDING


def test_deposit_credits_once_per_txid(alice, btc, operator):
    """EXTERNAL -> AVAILABLE; the same txid again returns the first deposit and moves nothing."""
    deposit, created = deposit_credit(user=alice, asset=btc, amount=D("1.5"), txid="0xabc", actor=operator,
                                      memo="wire 42")

    assert created and deposit.source == Deposit.Source.OPERATOR and deposit.created_by == operator
    assert balances(alice, btc) == (D("1.5"), D("0"))
    assert operator_balance(btc, EXTERNAL) == D("-1.5")
    txn = LedgerTransaction.objects.get(kind=TransactionKind.DEPOSIT)
    assert (txn.reference, txn.actor, txn.memo) == (f"deposit:{deposit.pk}", operator, "wire 42")

    again, created = deposit_credit(user=alice, asset=btc, amount=D("1.5"), txid="0xabc", actor=operator,
                                    memo="wire 42")

    assert not created and again.pk == deposit.pk
    assert balances(alice, btc) == (D("1.5"), D("0"))
    assert_ledger_sound()


def test_deposit_errors(alice, bob, btc, operator):
    """Conflicting repeats, bad amounts, a missing txid or reason are refused with stable codes; nothing moves."""
    deposit_credit(user=alice, asset=btc, amount=D("1"), txid="0xabc", source=Deposit.Source.CUSTODY)

    cases = [
        (dict(user=bob, amount=D("1"), txid="0xabc"), "DEPOSIT_CONFLICT"),
        (dict(user=alice, amount=D("2"), txid="0xabc"), "DEPOSIT_CONFLICT"),
        (dict(user=alice, amount=D("0.000000001"), txid="0xdef"), "INVALID_PRECISION"),
        (dict(user=alice, amount=D("0"), txid="0xdef"), "INVALID_AMOUNT"),
        (dict(user=alice, amount=D("1"), txid="  "), "INVALID_TXID"),
    ]
    for kwargs, code in cases:
        with pytest.raises(ApplicationError) as error:
            deposit_credit(asset=btc, source=Deposit.Source.CUSTODY, **kwargs)
        assert error.value.code == code, kwargs
    with pytest.raises(ApplicationError) as error:
        deposit_credit(user=alice, asset=btc, amount=D("1"), txid="0x1", actor=operator, memo=" ")
    assert error.value.code == "REASON_REQUIRED"
    assert balances(alice, btc) == (D("1"), D("0")) and Deposit.objects.count() == 1


def test_withdrawal_request_approve_complete(alice, btc, operator, fund):
    """REQUESTED holds the funds, APPROVED moves them to WITHDRAWALS_PENDING, COMPLETED to EXTERNAL."""
    fund(alice, btc, "2")

    withdrawal = withdrawal_request(user=alice, asset=btc, amount=D("0.75"), address="bc1qexample")
    assert withdrawal.status == Withdrawal.Status.REQUESTED
    assert balances(alice, btc) == (D("1.25"), D("0.75"))
    hold = Hold.objects.get(reference=f"withdrawal:{withdrawal.pk}")
    assert (hold.amount_remaining, hold.status) == (D("0.75"), "OPEN")
    assert_ledger_sound()

    withdrawal = withdrawal_approve(withdrawal=withdrawal, actor=operator, reason="KYC checked")
    assert (withdrawal.status, withdrawal.reviewed_by, withdrawal.reason) == ("APPROVED", operator, "KYC checked")
    assert balances(alice, btc) == (D("1.25"), D("0"))
    assert operator_balance(btc, PENDING) == D("0.75")
    assert Hold.objects.get(pk=hold.pk).status == "CLOSED"
    assert_ledger_sound()

    withdrawal = withdrawal_complete(withdrawal=withdrawal, actor=operator, txid="0xsent", reason="broadcast")
    assert (withdrawal.status, withdrawal.txid) == ("COMPLETED", "0xsent") and withdrawal.completed_at
    assert operator_balance(btc, PENDING) == D("0")
    assert operator_balance(btc, EXTERNAL) == D("-1.25")  # 2 came in, 0.75 went out
    kinds = LedgerTransaction.objects.filter(reference=f"withdrawal:{withdrawal.pk}").values_list("kind", "actor")
    assert list(kinds) == [("HOLD", None), ("WITHDRAWAL_APPROVE", operator.pk), ("WITHDRAWAL_COMPLETE", operator.pk)]
    assert_ledger_sound()


def test_withdrawal_reject_releases_the_funds(alice, btc, operator, fund):
    """Rejecting returns the held amount to available and records the operator's reason."""
    fund(alice, btc, "1")
    withdrawal = withdrawal_request(user=alice, asset=btc, amount=D("1"), address="bc1qexample")

    withdrawal = withdrawal_reject(withdrawal=withdrawal, actor=operator, reason="address on a sanctions list")

    assert (withdrawal.status, withdrawal.reason) == ("REJECTED", "address on a sanctions list")
    assert balances(alice, btc) == (D("1"), D("0"))
    release = LedgerTransaction.objects.get(kind=TransactionKind.RELEASE)
    assert (release.actor, release.memo) == (operator, "address on a sanctions list")
    assert_ledger_sound()


def test_withdrawal_transitions_are_enforced(alice, btc, operator, fund):
    """Only REQUESTED can be approved or rejected, only APPROVED completed; reasons and txids are required."""
    fund(alice, btc, "1")
    withdrawal = withdrawal_request(user=alice, asset=btc, amount=D("0.5"), address="bc1qexample")

    with pytest.raises(ApplicationError) as error:
        withdrawal_complete(withdrawal=withdrawal, actor=operator, txid="0x1", reason="sent")
    assert (error.value.code, error.value.status_code) == ("INVALID_WITHDRAWAL_STATE", 409)
    with pytest.raises(ApplicationError, match="reason") as error:
        withdrawal_reject(withdrawal=withdrawal, actor=operator, reason=" ")
    assert error.value.code == "REASON_REQUIRED"

    withdrawal_reject(withdrawal=withdrawal, actor=operator, reason="duplicate")
    for action in (withdrawal_approve, withdrawal_reject):
        with pytest.raises(ApplicationError) as error:
            action(withdrawal=withdrawal, actor=operator, reason="again")
        assert error.value.code == "INVALID_WITHDRAWAL_STATE" and error.value.extra == {"status": "REJECTED"}

    approved = withdrawal_approve(
        withdrawal=withdrawal_request(user=alice, asset=btc, amount=D("0.5"), address="x"), actor=operator, reason="ok"
    )
    with pytest.raises(ApplicationError) as error:
        withdrawal_complete(withdrawal=approved, actor=operator, txid="", reason="sent")
    assert error.value.code == "INVALID_TXID"
    assert balances(alice, btc) == (D("0.5"), D("0"))
    assert_ledger_sound()


def test_withdrawal_request_errors_leave_nothing_behind(alice, btc, fund):
    """A refused request leaves no withdrawal row and no hold (one transaction)."""
    fund(alice, btc, "1")
    cases = [
        (D("1.00000001"), "bc1q", "INSUFFICIENT_FUNDS"),
        (D("0.000000001"), "bc1q", "INVALID_PRECISION"),
        (D("-1"), "bc1q", "INVALID_AMOUNT"),
        (D("0.1"), " ", "INVALID_ADDRESS"),
    ]
    for amount, address, code in cases:
        with pytest.raises(ApplicationError) as error:
            withdrawal_request(user=alice, asset=btc, amount=amount, address=address)
        assert error.value.code == code
    assert not Withdrawal.objects.exists() and not Hold.objects.exists()
    assert balances(alice, btc) == (D("1"), D("0"))


def test_adjustments_need_a_reason_and_cannot_overdraw(alice, btc, operator, fund):
    """ADJUSTMENTS <-> AVAILABLE in both directions, with the operator and reason on the journal."""
    fund(alice, btc, "1")

    credit = balance_adjust(user=alice, asset=btc, amount=D("0.1"), actor=operator, reason="goodwill, ticket 7")
    balance_adjust(user=alice, asset=btc, amount=D("-0.05"), actor=operator, reason="fee refund reversed")

    assert balances(alice, btc) == (D("1.05"), D("0"))
    assert operator_balance(btc, AccountKind.ADJUSTMENTS) == D("-0.05")
    assert (credit.kind, credit.actor, credit.memo) == ("ADJUSTMENT", operator, "goodwill, ticket 7")
    with pytest.raises(ApplicationError) as error:
        balance_adjust(user=alice, asset=btc, amount=D("-1.06"), actor=operator, reason="too much")
    assert error.value.code == "INSUFFICIENT_FUNDS"
    with pytest.raises(ApplicationError) as error:
        balance_adjust(user=alice, asset=btc, amount=D("1"), actor=operator, reason="")
    assert error.value.code == "REASON_REQUIRED"
    assert balances(alice, btc) == (D("1.05"), D("0"))
    assert_ledger_sound()
