"""Holds and trade settlement, worked through with exact balances after every step."""

from decimal import Decimal as D

import pytest

from exchange.core.errors import ApplicationError
from tests.factories import AssetFactory, MarketFactory
from tests.wallet.conftest import balances, operator_balance
from wallet.invariants import assert_ledger_sound
from wallet.models import AccountKind, Hold, LedgerEntry, LedgerTransaction, TransactionKind
from wallet.services import (
    HoldIncrease,
    HoldPlace,
    HoldRelease,
    LedgerUsageError,
    TradeSettlement,
    funds_hold,
    hold_increase,
    hold_release,
    ledger_apply,
    trade_settle,
)

pytestmark = pytest.mark.django_db


def _trade(market, buyer, seller, *, reference="trade:BTC-USDT:1", buyer_hold="order:1", seller_hold="order:2",
           quantity="0.5", notional="15000", buyer_fee="0", seller_fee="0"):
    return TradeSettlement(
        reference=reference,
        base_asset_id=market.base_id,
        quote_asset_id=market.quote_id,
        buyer_id=buyer.pk,
        seller_id=seller.pk,
        buyer_hold_reference=buyer_hold,
        seller_hold_reference=seller_hold,
        quantity=D(quantity),
        notional=D(notional),
        buyer_fee=D(buyer_fee),
        seller_fee=D(seller_fee),
    )


def test_hold_increase_and_release_move_funds_between_available_and_held(alice, usdt, fund):
    """Each step moves exactly its amount, the hold tracks what it has left, and closing needs it empty."""
    fund(alice, usdt, "1000")

    hold = funds_hold(user=alice, asset=usdt, amount=D("300"), reference="order:1", memo="buy 0.01 BTC")
    assert balances(alice, usdt) == (D("700"), D("300"))
    assert (hold.amount, hold.amount_remaining, hold.status) == (D("300"), D("300"), Hold.Status.OPEN)

    hold = hold_increase(reference="order:1", amount=D("50.5"))
    assert balances(alice, usdt) == (D("649.5"), D("350.5"))
    assert (hold.amount, hold.amount_remaining) == (D("350.5"), D("350.5"))

    hold = hold_release(reference="order:1", amount=D("0.5"))
    assert balances(alice, usdt) == (D("650"), D("350"))
    assert (hold.amount, hold.amount_remaining, hold.status) == (D("350.5"), D("350"), Hold.Status.OPEN)

    hold = hold_release(reference="order:1", close=True)
    assert balances(alice, usdt) == (D("1000"), D("0"))
    assert (hold.amount_remaining, hold.status) == (D("0"), Hold.Status.CLOSED)
    assert hold.closed_at is not None
    assert Hold.objects.get(reference="order:1").status == Hold.Status.CLOSED
    kinds = list(LedgerTransaction.objects.filter(reference="order:1").values_list("kind", flat=True))
    assert kinds == ["HOLD", "HOLD", "RELEASE", "RELEASE"]
    assert_ledger_sound()


def test_trade_settlement_with_fees_on_what_each_side_receives(market, alice, bob, btc, usdt, fund):
    """Alice buys 0.5 BTC for 15000 USDT from Bob: fees come out of what each receives and go to FEES."""
    fund(alice, usdt, "20000")
    fund(bob, btc, "1")
    funds_hold(user=alice, asset=usdt, amount=D("16000"), reference="order:1")
    funds_hold(user=bob, asset=btc, amount=D("0.5"), reference="order:2")

    transaction_id = trade_settle(
        settlement=_trade(market, alice, bob, buyer_fee="0.0005", seller_fee="30")
    )

    assert balances(alice, usdt) == (D("4000"), D("1000"))  # 1000 of her hold is left
    assert balances(alice, btc) == (D("0.4995"), D("0"))
    assert balances(bob, btc) == (D("0.5"), D("0"))
    assert balances(bob, usdt) == (D("14970"), D("0"))
    assert operator_balance(btc, AccountKind.FEES) == D("0.0005")
    assert operator_balance(usdt, AccountKind.FEES) == D("30")
    trade = LedgerTransaction.objects.get(pk=transaction_id)
    assert (trade.kind, trade.reference) == (TransactionKind.TRADE, "trade:BTC-USDT:1")
    assert trade.entries.count() == 6
    held_entries = LedgerEntry.objects.filter(transaction=trade, account__kind=AccountKind.HELD)
    assert sorted(e.hold.reference for e in held_entries) == ["order:1", "order:2"]
    assert Hold.objects.get(reference="order:1").amount_remaining == D("1000")
    assert_ledger_sound()


def test_batch_sees_earlier_operations_and_releases_exactly_what_is_left(market, alice, bob, btc, usdt, fund):
    """Two fills of one hold and a release-and-close in the same batch: the release returns the remainder."""
    fund(alice, usdt, "10000")
    fund(bob, btc, "1")
    ledger_apply([
        HoldPlace("order:1", alice.pk, usdt.pk, D("10000")),
        HoldPlace("order:2", bob.pk, btc.pk, D("0.3")),
    ])

    ids = ledger_apply([
        _trade(market, alice, bob, reference="trade:BTC-USDT:1", quantity="0.1", notional="3000"),
        _trade(market, alice, bob, reference="trade:BTC-USDT:2", quantity="0.2", notional="5999.99"),
        HoldRelease("order:1", close=True),
        HoldRelease("order:2", close=True),
    ])

    assert ids[0] < ids[1] < ids[2] and ids[3] is None  # bob's hold was used up: nothing to release
    assert balances(alice, usdt) == (D("1000.01"), D("0"))
    assert balances(alice, btc) == (D("0.3"), D("0"))
    assert balances(bob, usdt) == (D("8999.99"), D("0"))
    assert balances(bob, btc) == (D("0.7"), D("0"))
    assert set(Hold.objects.values_list("status", flat=True)) == {"CLOSED"}
    assert_ledger_sound()


def test_self_trade_settles(market, alice, btc, usdt, fund):
    """Buyer and seller may be the same user (STP NONE): only the fees leave her."""
    fund(alice, usdt, "1000")
    fund(alice, btc, "1")
    funds_hold(user=alice, asset=usdt, amount=D("100"), reference="order:1")
    funds_hold(user=alice, asset=btc, amount=D("0.01"), reference="order:2")

    trade_settle(settlement=_trade(market, alice, alice, quantity="0.01", notional="100",
                                   buyer_fee="0.00001", seller_fee="0.1"))

    assert balances(alice, usdt) == (D("999.9"), D("0"))
    assert balances(alice, btc) == (D("0.99999"), D("0"))
    assert_ledger_sound()


def test_holding_more_than_available_is_insufficient_funds_and_changes_nothing(alice, usdt, fund):
    """INSUFFICIENT_FUNDS names the asset; the refused hold leaves no hold row and no balance change."""
    fund(alice, usdt, "100")

    with pytest.raises(ApplicationError) as error:
        funds_hold(user=alice, asset=usdt, amount=D("100.000001"), reference="order:1")

    assert error.value.code == "INSUFFICIENT_FUNDS" and error.value.status_code == 400
    assert error.value.extra == {"asset": "USDT"} and "USDT" in error.value.message
    assert balances(alice, usdt) == (D("100"), D("0"))
    assert not Hold.objects.exists()
    funds_hold(user=alice, asset=usdt, amount=D("1"), reference="order:2")
    with pytest.raises(ApplicationError, match="USDT"):
        hold_increase(reference="order:2", amount=D("99.5"))
    assert balances(alice, usdt) == (D("99"), D("1"))
    assert Hold.objects.get().amount_remaining == D("1")


def test_consuming_more_than_a_hold_has_is_refused(market, alice, bob, btc, usdt, fund):
    """A trade can only take what its holds have left, even if the user has more elsewhere."""
    fund(alice, usdt, "20000")
    fund(bob, btc, "1")
    funds_hold(user=alice, asset=usdt, amount=D("100"), reference="order:1")
    funds_hold(user=alice, asset=usdt, amount=D("15000"), reference="order:9")
    funds_hold(user=bob, asset=btc, amount=D("0.5"), reference="order:2")

    with pytest.raises(ApplicationError) as error:
        trade_settle(settlement=_trade(market, alice, bob))
    assert error.value.code == "INSUFFICIENT_FUNDS" and error.value.extra["reference"] == "order:1"
    with pytest.raises(ApplicationError):
        hold_release(reference="order:1", amount=D("100.000001"))
    assert balances(alice, usdt) == (D("4900"), D("15100"))
    assert_ledger_sound()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"quantity": "0.000000001"}, "not a whole number of BTC"),
        ({"notional": "0.0000001"}, "not a whole number of USDT"),
        ({"buyer_fee": "0.6"}, "buyer_fee"),
        ({"seller_fee": "-1"}, "seller_fee"),
        ({"quantity": "0"}, "quantity must be a positive"),
        ({"buyer_hold": "order:404"}, "no hold with reference order:404"),
        ({"buyer_hold": "order:2"}, "must name a hold of that user and asset"),
    ],
)
def test_settlement_contract_violations_are_programming_errors(market, alice, bob, btc, usdt, fund, change, message):
    """Unquantized amounts, fees above what is received, wrong holds: LedgerUsageError, nothing written."""
    fund(alice, usdt, "20000")
    fund(bob, btc, "1")
    funds_hold(user=alice, asset=usdt, amount=D("15000"), reference="order:1")
    funds_hold(user=bob, asset=btc, amount=D("0.5"), reference="order:2")
    entries = LedgerEntry.objects.count()

    with pytest.raises(LedgerUsageError, match=message):
        trade_settle(settlement=_trade(market, alice, bob, **change))

    assert LedgerEntry.objects.count() == entries


def test_hold_contract_violations(alice, usdt, fund):
    """Duplicate references, unquantized amounts and operating on closed holds raise LedgerUsageError."""
    fund(alice, usdt, "100")
    funds_hold(user=alice, asset=usdt, amount=D("10"), reference="order:1")

    with pytest.raises(LedgerUsageError, match="already used"):
        funds_hold(user=alice, asset=usdt, amount=D("10"), reference="order:1")
    with pytest.raises(LedgerUsageError, match="not a whole number"):
        funds_hold(user=alice, asset=usdt, amount=D("0.0000001"), reference="order:2")
    with pytest.raises(LedgerUsageError, match="positive"):
        hold_increase(reference="order:1", amount=D("-1"))
    with pytest.raises(LedgerUsageError, match="cannot be closed"):
        hold_release(reference="order:1", amount=D("1"), close=True)
    hold_release(reference="order:1", close=True)
    with pytest.raises(LedgerUsageError, match="closed"):
        hold_release(reference="order:1")
    with pytest.raises(LedgerUsageError, match="closed"):
        hold_increase(reference="order:1", amount=D("1"))
    with pytest.raises(LedgerUsageError, match="twice"):
        ledger_apply([HoldPlace("order:3", alice.pk, usdt.pk, D("1")), HoldPlace("order:3", alice.pk, usdt.pk, D("1"))])
    assert balances(alice, usdt) == (D("100"), D("0"))
    assert_ledger_sound()


def test_a_trade_settles_only_once(market, alice, bob, btc, usdt, fund):
    """The TRADE reference is unique in the journal: replaying a settled trade is refused."""
    fund(alice, usdt, "20000")
    fund(bob, btc, "1")
    funds_hold(user=alice, asset=usdt, amount=D("20000"), reference="order:1")
    funds_hold(user=bob, asset=btc, amount=D("1"), reference="order:2")
    trade_settle(settlement=_trade(market, alice, bob, quantity="0.1", notional="3000"))

    with pytest.raises(LedgerUsageError, match="already posted"):
        trade_settle(settlement=_trade(market, alice, bob, quantity="0.1", notional="3000"))

    assert balances(bob, usdt) == (D("3000"), D("0"))


def test_increase_then_settle_then_release_in_one_batch(market, alice, bob, btc, usdt, fund):
    """An amended order (hold increase) filled and cancelled within one matcher batch."""
    fund(alice, usdt, "1000")
    fund(bob, btc, "1")
    funds_hold(user=alice, asset=usdt, amount=D("100"), reference="order:1")
    funds_hold(user=bob, asset=btc, amount=D("0.01"), reference="order:2")

    ledger_apply([
        HoldIncrease("order:1", D("200")),
        _trade(market, alice, bob, quantity="0.01", notional="250"),
        HoldRelease("order:1", close=True),
        HoldRelease("order:2", close=True),
    ])

    assert balances(alice, usdt) == (D("750"), D("0"))
    assert balances(alice, btc) == (D("0.01"), D("0"))
    assert_ledger_sound()


def test_amounts_of_35_digits_stay_exact(alice, bob, usdt, fund):
    """Python's default decimal context keeps 28 digits and rounds silently; the ledger keeps them all."""
    wei = AssetFactory(code="ETH", precision=18)
    eth_usdt = MarketFactory(base=wei, quote=usdt)
    quantity = D("12345678901234567.123456789012345678")  # 35 significant digits
    fund(alice, usdt, "1000")
    fund(bob, wei, quantity)
    ledger_apply([
        HoldPlace("order:1", alice.pk, usdt.pk, D("1000")),
        HoldPlace("order:2", bob.pk, wei.pk, quantity),
        _trade(eth_usdt, alice, bob, quantity=str(quantity), notional="1000", buyer_fee="0.000000000000000001"),
    ])

    assert balances(alice, wei) == (D("12345678901234567.123456789012345677"), D("0"))
    assert balances(bob, wei) == (D("0"), D("0"))
    assert_ledger_sound()


def test_a_batch_that_falls_short_names_the_operation(market, alice, bob, btc, usdt, fund):
    """A batch is all or nothing, and its INSUFFICIENT_FUNDS says which operation fell short."""
    fund(alice, usdt, "100")
    with pytest.raises(ApplicationError) as error:
        ledger_apply([HoldPlace("order:1", alice.pk, usdt.pk, D("60")), HoldPlace("order:2", alice.pk, usdt.pk, D("60"))])
    assert error.value.extra == {"asset": "USDT", "operation": 1}
    assert balances(alice, usdt) == (D("100"), D("0"))
