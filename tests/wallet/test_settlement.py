"""Netted settlement of a matcher batch (wallet/services/settlement.py), with exact balances."""

from decimal import Decimal as D

import pytest

from exchange.core.errors import ApplicationError
from tests.wallet.conftest import balances, operator_balance
from wallet.invariants import assert_ledger_sound
from wallet.models import AccountKind, Hold, LedgerEntry, LedgerTransaction
from wallet.services import BatchSettlement, HoldRelease, LedgerUsageError, batch_settle, funds_hold

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_trades_behind_these_batches(monkeypatch):
    """These batches have no trade rows behind them (the trades are the matcher's, see
    tests/matching/test_batch_failure_modes.py): the check that a batch equals the sum
    over its trades is set aside here; every other invariant is checked."""
    from wallet import invariants

    monkeypatch.setattr(invariants, "CHECKS", [c for c in invariants.CHECKS if c is not invariants._batches_match_trades])


def _two_fills(market, alice, bob):
    """Alice buys 0.5 BTC from Bob in two fills at 30,000 (0.2 + 0.3, 15,000 USDT), paying
    0.0005 BTC of fees; Bob pays 30 USDT. Netted per (user, asset, kind, hold)."""
    base, quote = market.base_id, market.quote_id
    return {
        (alice.pk, quote, "HELD", "order:1"): D("-15000"),
        (bob.pk, quote, "AVAILABLE", None): D("14970"),
        (None, quote, "FEES", None): D("30"),
        (bob.pk, base, "HELD", "order:2"): D("-0.5"),
        (alice.pk, base, "AVAILABLE", None): D("0.4995"),
        (None, base, "FEES", None): D("0.0005"),
    }


def test_one_transaction_per_batch_with_releases_after_the_trades(market, alice, bob, btc, usdt, fund):
    """The trades and the releases of one batch post ONE transaction with one entry per
    (account, hold): Alice's order keeps 3,000 USDT for its unfilled part (``keep``), Bob's
    order filled and gives back the rest of its hold, which closes."""
    fund(alice, usdt, "20000")
    fund(bob, btc, "1")
    funds_hold(user=alice, asset=usdt, amount=D("18000"), reference="order:1")
    funds_hold(user=bob, asset=btc, amount=D("0.6"), reference="order:2")

    transaction_id = batch_settle(settlement=BatchSettlement(
        reference="match:BTC-USDT:1:9", legs=_two_fills(market, alice, bob),
        releases=[HoldRelease(reference="order:1", keep=D("3000")), HoldRelease(reference="order:2", close=True)],
    ))

    assert balances(alice, usdt) == (D("2000"), D("3000"))
    assert balances(alice, btc) == (D("0.4995"), D("0"))
    assert balances(bob, btc) == (D("0.5"), D("0"))
    assert balances(bob, usdt) == (D("14970"), D("0"))
    assert operator_balance(btc, AccountKind.FEES) == D("0.0005")
    assert operator_balance(usdt, AccountKind.FEES) == D("30")
    batch = LedgerTransaction.objects.get(pk=transaction_id)
    assert (batch.kind, batch.reference) == ("MATCH", "match:BTC-USDT:1:9")
    # Alice: HELD USDT, AVAILABLE BTC (her release is zero: no entry); Bob: HELD BTC,
    # AVAILABLE BTC (his release), AVAILABLE USDT; FEES in each asset
    assert batch.entries.count() == 7
    held = {e.hold.reference: e.amount for e in LedgerEntry.objects.filter(transaction=batch, hold__isnull=False)}
    assert held == {"order:1": D("-15000"), "order:2": D("-0.6")}  # fills and releases summed per hold
    assert Hold.objects.get(reference="order:1").amount_remaining == D("3000")
    assert Hold.objects.get(reference="order:2").status == Hold.Status.CLOSED
    assert_ledger_sound()


def test_a_batch_is_settled_once(market, alice, bob, btc, usdt, fund):
    fund(alice, usdt, "20000")
    fund(bob, btc, "1")
    funds_hold(user=alice, asset=usdt, amount=D("18000"), reference="order:1")
    funds_hold(user=bob, asset=btc, amount=D("0.6"), reference="order:2")
    half = {key: amount / 2 for key, amount in _two_fills(market, alice, bob).items()}
    batch_settle(settlement=BatchSettlement(reference="match:BTC-USDT:1:9", legs=half))
    with pytest.raises(LedgerUsageError, match="already posted"):
        batch_settle(settlement=BatchSettlement(reference="match:BTC-USDT:1:9", legs=half))
    assert LedgerTransaction.objects.filter(kind="MATCH").count() == 1


def test_a_batch_taking_more_than_a_hold_has_is_refused_whole(market, alice, bob, btc, usdt, fund):
    """Netting checks the final amounts: a hold consumed beyond what it has left raises
    INSUFFICIENT_FUNDS and nothing of the batch is written."""
    fund(alice, usdt, "20000")
    fund(bob, btc, "1")
    funds_hold(user=alice, asset=usdt, amount=D("10000"), reference="order:1")
    funds_hold(user=bob, asset=btc, amount=D("0.6"), reference="order:2")
    with pytest.raises(ApplicationError) as error:
        batch_settle(settlement=BatchSettlement(reference="match:BTC-USDT:1:9", legs=_two_fills(market, alice, bob)))
    assert error.value.code == "INSUFFICIENT_FUNDS"
    assert not LedgerTransaction.objects.filter(kind="MATCH").exists()
    assert balances(alice, usdt) == (D("10000"), D("10000"))


def test_a_leg_that_adds_to_a_hold_or_names_a_hold_on_the_wrong_account_is_a_bug(market, alice, btc, usdt, fund):
    fund(alice, usdt, "100")
    funds_hold(user=alice, asset=usdt, amount=D("50"), reference="order:1")
    quote = market.quote_id
    with pytest.raises(LedgerUsageError):
        batch_settle(settlement=BatchSettlement(reference="match:X:1:2", legs={
            (alice.pk, quote, "HELD", "order:1"): D("1"), (alice.pk, quote, "AVAILABLE", None): D("-1")}))
    with pytest.raises(LedgerUsageError):
        batch_settle(settlement=BatchSettlement(reference="match:X:1:2", legs={
            (alice.pk, quote, "AVAILABLE", "order:1"): D("-1"), (alice.pk, quote, "HELD", None): D("1")}))
