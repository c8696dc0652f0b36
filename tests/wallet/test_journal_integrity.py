"""What PostgreSQL itself refuses, whatever code (or raw SQL) writes to the ledger."""

from decimal import Decimal as D

import pytest
from django.db import IntegrityError, connection, transaction

from tests.wallet.conftest import balance
from wallet.models import Account, AccountKind, Hold, LedgerEntry, LedgerTransaction
from wallet.services import funds_hold

pytestmark = pytest.mark.django_db


def _sql(statement: str, params=()):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params)


def _accounts(alice, btc):
    return (
        Account.objects.get(user=alice, asset=btc, kind=AccountKind.AVAILABLE),
        Account.objects.get(user=None, asset=btc, kind=AccountKind.EXTERNAL),
    )


def test_journal_rows_cannot_be_updated_or_deleted(alice, btc, fund):
    """Append-only: a mistake is corrected by a new transaction, never by editing one."""
    fund(alice, btc, "1")
    for statement in (
        "UPDATE wallet_ledgerentry SET amount = amount * 2",
        "DELETE FROM wallet_ledgerentry",
        "UPDATE wallet_ledgertransaction SET memo = 'edited'",
        "DELETE FROM wallet_ledgertransaction",
    ):
        with pytest.raises(IntegrityError, match="append-only"):
            _sql(statement)
    assert LedgerEntry.objects.count() == 2


def test_an_unbalanced_insert_is_refused(alice, btc, fund):
    """The statement-level trigger checks every transaction an INSERT touches, per asset."""
    fund(alice, btc, "1")
    available, external = _accounts(alice, btc)
    txn = LedgerTransaction.objects.create(kind="ADJUSTMENT", reference="test")
    insert = "INSERT INTO wallet_ledgerentry (transaction_id, account_id, asset_id, amount) VALUES (%s, %s, %s, %s)"

    with pytest.raises(IntegrityError, match=f"journal transaction {txn.pk} does not balance"):
        _sql(insert, [txn.pk, available.pk, btc.pk, D("5")])
    with pytest.raises(IntegrityError, match="does not balance"):
        _sql(insert + ", (%s, %s, %s, %s)", [txn.pk, available.pk, btc.pk, D("5"), txn.pk, external.pk, btc.pk, D("-4")])
    _sql(insert + ", (%s, %s, %s, %s)", [txn.pk, available.pk, btc.pk, D("5"), txn.pk, external.pk, btc.pk, D("-5")])


@pytest.mark.parametrize(
    "entry, problem",
    [
        (dict(transaction=10**9), "its transaction 1000000000 does not exist"),
        (dict(account=10**9), "account 1000000000 does not exist"),
        (dict(asset="usdt"), "its asset differs from its account's"),
        (dict(account="held", hold=None), "an entry on a HELD account must name an existing hold"),
        (dict(account="held", hold=10**9), "an entry on a HELD account must name an existing hold"),
        (dict(hold="alice"), "only entries on HELD accounts name a hold"),
        (dict(account="held", hold="bob"), "belongs to another user or asset than its account"),
    ],
)
def test_entries_must_reference_real_rows_consistently(alice, bob, btc, usdt, fund, entry, problem):
    """The per-statement check stands in for foreign keys, and is stronger: the hold must be the account's."""
    fund(alice, btc, "1")
    fund(bob, btc, "1")
    rows = {
        "alice": funds_hold(user=alice, asset=btc, amount=D("0.5"), reference="order:1").pk,
        "bob": funds_hold(user=bob, asset=btc, amount=D("0.5"), reference="order:2").pk,
        "held": Account.objects.get(user=alice, asset=btc, kind=AccountKind.HELD).pk,
        "usdt": usdt.pk,
    }
    available, external = _accounts(alice, btc)
    txn = LedgerTransaction.objects.create(kind="ADJUSTMENT", reference="test")
    first = dict(transaction=txn.pk, account=available.pk, asset=btc.pk, amount=D("1"), hold=None)
    first.update({key: rows.get(value, value) for key, value in entry.items()})
    second = dict(transaction=txn.pk, account=external.pk, asset=btc.pk, amount=D("-1"), hold=None)
    columns = ["transaction", "account", "asset", "amount", "hold"]

    with pytest.raises(IntegrityError, match=problem):
        _sql(
            "INSERT INTO wallet_ledgerentry (transaction_id, account_id, asset_id, amount, hold_id)"
            " VALUES (%s, %s, %s, %s, %s), (%s, %s, %s, %s, %s)",
            [first[c] for c in columns] + [second[c] for c in columns],
        )


def test_accounts_and_holds_are_never_deleted(alice, btc, fund):
    """Raw DELETEs of accounts or holds are refused by the database."""
    fund(alice, btc, "1")
    funds_hold(user=alice, asset=btc, amount=D("0.5"), reference="order:1")
    for table in ("wallet_account", "wallet_hold"):
        with pytest.raises(IntegrityError, match="never deleted"):
            _sql(f"DELETE FROM {table}")


def test_user_balances_and_holds_cannot_go_negative_even_by_raw_sql(alice, btc, fund):
    """CHECK constraints keep user balances and holds non-negative and closed holds empty, whatever writes."""
    fund(alice, btc, "1")
    funds_hold(user=alice, asset=btc, amount=D("0.5"), reference="order:1")

    with pytest.raises(IntegrityError, match="wallet_account_user_balance_not_negative"):
        _sql("UPDATE wallet_account SET balance = -1 WHERE user_id = %s AND kind = 'AVAILABLE'", [alice.pk])
    with pytest.raises(IntegrityError, match="wallet_hold_remaining_not_negative"):
        _sql("UPDATE wallet_hold SET amount_remaining = -1")
    with pytest.raises(IntegrityError, match="wallet_hold_closed_is_empty"):
        _sql("UPDATE wallet_hold SET status = 'CLOSED', closed_at = now()")
    # The operator's EXTERNAL account mirrors money from outside and is negative by design.
    assert Account.objects.get(user=None, kind=AccountKind.EXTERNAL).balance == D("-1")
    assert balance(alice, btc) == D("0.5") and Hold.objects.get().amount_remaining == D("0.5")


def test_one_account_per_owner_asset_and_kind_including_the_operator(btc):
    """nulls_distinct=False: the operator (NULL user) has exactly one FEES account per asset too."""
    Account.objects.create(user=None, asset=btc, kind=AccountKind.FEES)
    with pytest.raises(IntegrityError), transaction.atomic():
        Account.objects.create(user=None, asset=btc, kind=AccountKind.FEES)
    with pytest.raises(IntegrityError), transaction.atomic():
        Account.objects.create(user=None, asset=btc, kind=AccountKind.AVAILABLE)
