"""manage.py check_ledger: silent success on a sound ledger, every broken invariant named with its rows."""

from decimal import Decimal as D

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from wallet.invariants import Violation, _hold_checks, ledger_violations, register_hold_check
from wallet.models import Account, AccountKind, Hold, LedgerEntry
from wallet.services import funds_hold, withdrawal_request

pytestmark = pytest.mark.django_db


@pytest.fixture
def ledger(alice, bob, btc, usdt, fund):
    """A small ledger with deposits, an order hold and a requested withdrawal."""
    fund(alice, btc, "2")
    fund(bob, usdt, "1000")
    funds_hold(user=bob, asset=usdt, amount=D("100"), reference="order:1")
    return withdrawal_request(user=alice, asset=btc, amount=D("0.5"), address="bc1q")


def _sql(statement, params=()):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def _check(capsys) -> tuple[bool, str]:
    try:
        call_command("check_ledger")
        ok = True
    except CommandError:
        ok = False
    return ok, capsys.readouterr().out


def test_a_sound_ledger_passes(ledger, capsys):
    """A ledger built through the services passes every check (exit status 0)."""
    ok, out = _check(capsys)
    assert ok and "ledger ok" in out


def test_a_tampered_cached_balance_is_named_with_its_account(ledger, alice, btc, capsys):
    """Editing a cached balance directly breaks 'balance = sum of entries' and the asset total."""
    account = Account.objects.get(user=alice, asset=btc, kind=AccountKind.AVAILABLE)
    _sql("UPDATE wallet_account SET balance = balance + 1 WHERE id = %s", [account.pk])

    ok, out = _check(capsys)

    assert not ok
    assert f"[account_balance_matches_entries] account {account.pk} (AVAILABLE)" in out
    assert f"wallet_account {account.pk}" in out
    assert "[asset_total_zero] the accounts of BTC sum to 1" in out


def test_an_unbalanced_journal_entry_is_found(ledger, alice, btc, capsys):
    """With the balance trigger disabled in this test's transaction, check_ledger still finds the hole."""
    account = Account.objects.get(user=alice, asset=btc, kind=AccountKind.AVAILABLE)
    _sql("SET CONSTRAINTS ALL IMMEDIATE")  # flush deferred foreign key checks, so the table can be altered
    _sql("ALTER TABLE wallet_ledgerentry DISABLE TRIGGER wallet_ledgerentry_checked")
    txn = LedgerEntry.objects.filter(account=account).first().transaction_id
    _sql("INSERT INTO wallet_ledgerentry (transaction_id, account_id, asset_id, amount) VALUES (%s, %s, %s, 0.1)",
         [txn, account.pk, btc.pk])
    entry = LedgerEntry.objects.latest("id").pk

    ok, out = _check(capsys)

    assert not ok
    assert f"[transaction_balances] journal transaction {txn} does not balance: its BTC entries sum to 0.1" in out
    assert "wallet_ledgerentry" in out and str(entry) in out


def test_holds_that_disagree_with_held_balances_and_withdrawals(ledger, capsys):
    """A hold's cached remaining edited behind the ledger's back breaks three invariants at once."""
    hold = Hold.objects.get(reference=f"withdrawal:{ledger.pk}")
    _sql("UPDATE wallet_hold SET amount_remaining = 0.4 WHERE id = %s", [hold.pk])

    ok, out = _check(capsys)

    assert not ok
    assert f"[hold_matches_entries] hold {hold.pk} (withdrawal:{ledger.pk}): remaining is 0.4" in out
    assert "[held_balance_matches_holds]" in out and f"wallet_hold {hold.pk}" in out
    assert f"[withdrawal_holds] withdrawal {ledger.pk} (REQUESTED): its hold should be open with 0.5" in out


def test_unquantized_amounts_are_found(ledger, alice, btc, capsys):
    """An amount finer than its asset's unit, written behind the ledger's back, is named with its row."""
    _sql("UPDATE wallet_withdrawal SET amount = 0.123456789 WHERE id = %s", [ledger.pk])

    ok, out = _check(capsys)

    assert not ok
    assert f"[amount_quantized] wallet_withdrawal {ledger.pk}: amount 0.123456789" in out


def test_registered_hold_checks_receive_their_holds(ledger):
    """The orders app will register its own check per reference prefix; it gets exactly its holds."""
    seen = []

    def order_check(holds):
        seen.extend(holds.values_list("reference", flat=True))
        return [Violation("order_holds", "order 1 is not open", {"wallet_hold": [holds.get().pk]})]

    register_hold_check("order", order_check)
    try:
        violations = ledger_violations()
    finally:
        del _hold_checks["order"]

    assert seen == ["order:1"]
    assert [v.check for v in violations] == ["order_holds"]


def test_entries_that_break_the_hold_rules_are_found(ledger, alice, btc, capsys):
    """A balanced pair slipped past the insert check: a HELD entry without a hold is still named."""
    held = Account.objects.get(user=alice, asset=btc, kind=AccountKind.HELD)
    available = Account.objects.get(user=alice, asset=btc, kind=AccountKind.AVAILABLE)
    txn = LedgerEntry.objects.filter(account=held).first().transaction_id
    _sql("SET CONSTRAINTS ALL IMMEDIATE")
    _sql("ALTER TABLE wallet_ledgerentry DISABLE TRIGGER wallet_ledgerentry_checked")
    _sql("INSERT INTO wallet_ledgerentry (transaction_id, account_id, asset_id, amount) VALUES (%s, %s, %s, 0.1),"
         " (%s, %s, %s, -0.1)", [txn, held.pk, btc.pk, txn, available.pk, btc.pk])

    ok, out = _check(capsys)

    assert not ok
    assert f"on account {held.pk}: an entry on a HELD account names no hold" in out
