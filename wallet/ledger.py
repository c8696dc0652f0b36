"""The one primitive that moves money: ``Posting``.

Every service builds its journal transactions through a ``Posting``:

1. ``Posting(accounts=..., holds=..., new_holds=...)`` inserts the new holds,
   locks the existing holds it names (``FOR UPDATE`` in ascending id order,
   one query), creates missing accounts (``INSERT ... ON CONFLICT DO
   NOTHING`` in a fixed key order, before any account is locked) and locks
   every account it will touch (one query, ascending id). Holds are always
   locked before accounts, each in ascending id order, so any two postings
   that touch the same rows take their locks in the same order and cannot
   deadlock. The AVAILABLE and HELD accounts of every hold's owner are
   locked with the hold.
2. ``transfer(...)`` adds one balanced journal transaction, checking every
   amount against the asset's precision and applying it to the in-memory
   balances at once, so later transfers of the same posting see it. A user
   balance or a hold that would go negative raises ``INSUFFICIENT_FUNDS``.
3. ``write()`` inserts all transactions and entries in one statement and
   updates the cached account balances and holds with one statement each;
   a posting is written once. It also writes, with one more statement, a
   ``balance.changed`` outbox event per (user, asset) whose balance changed,
   with the new available and held balances (docs/EVENTS.md): every money
   movement passes here, so each is published exactly once.

A posting must run inside ``transaction.atomic``; one that raised is
discarded with its transaction. Arithmetic runs in ``LEDGER_CONTEXT``, which
raises instead of rounding.
"""

from __future__ import annotations

import decimal
import functools
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, NamedTuple

import psycopg
from django.db import connection

from exchange.core.errors import ApplicationError
from exchange.core.fields import decimal_to_str
from exchange.core.sql import array_literal, server_cursor, tid_literal
from wallet.models import AccountKind, Hold, TransactionKind

# (user id or None for the operator, asset id, account kind)
AccountKey = tuple[int | None, int, str]

ZERO = Decimal(0)
AVAILABLE = AccountKind.AVAILABLE.value
HELD = AccountKind.HELD.value
_USER_KINDS = frozenset((AVAILABLE, HELD))

# Wide enough that sums of 38-digit amounts are exact; rounding raises.
LEDGER_CONTEXT = decimal.Context(
    prec=80,
    traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow, decimal.Inexact],
)
_QUANTIZE_CONTEXT = decimal.Context(prec=80)


def exact(function):
    """Run ``function`` in LEDGER_CONTEXT: every amount it computes is exact or raises.

    Python's default decimal context keeps 28 significant digits and rounds
    silently; ledger amounts have up to 38.
    """

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with decimal.localcontext(LEDGER_CONTEXT):
            return function(*args, **kwargs)

    return wrapper


class LedgerUsageError(Exception):
    """The calling code broke the ledger's contract: a bug, not a user error.

    Examples: an amount finer than the asset's precision, a hold reference
    used twice or unknown, releasing from a closed hold, a fee larger than
    what it is charged on. User errors (insufficient funds, bad input from
    the API) are ``ApplicationError`` instead.
    """


def is_quantized(amount: Decimal, precision: int) -> bool:
    """Whether ``amount`` is a whole number of units of ``precision`` decimal places."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        return False
    if amount.as_tuple().exponent >= -precision:
        return True
    return amount.quantize(Decimal(1).scaleb(-precision), context=_QUANTIZE_CONTEXT) == amount


def validate_amount(*, asset, amount, field: str = "amount", signed: bool = False) -> Decimal:
    """Check a user-supplied amount for ``asset``; ApplicationError with a stable code if wrong.

    Positive (or, with ``signed``, non-zero), finite, and a whole number of
    the asset's smallest unit: the ledger never rounds a user's amount.
    """
    if isinstance(amount, bool) or not isinstance(amount, (Decimal, int)):
        raise ApplicationError("INVALID_AMOUNT", "Amounts must be decimal numbers.", field=field)
    amount = Decimal(amount)
    if not amount.is_finite() or amount == 0 or (amount < 0 and not signed):
        expected = "non-zero" if signed else "positive"
        raise ApplicationError("INVALID_AMOUNT", f"The amount must be a {expected} number.", field=field)
    if not is_quantized(amount, asset.precision):
        raise ApplicationError(
            "INVALID_PRECISION",
            f"{asset.code} amounts have at most {asset.precision} decimal places.",
            field=field,
            extra={"asset": asset.code, "precision": asset.precision},
        )
    if abs(amount) >= Decimal(10) ** 20:
        raise ApplicationError("INVALID_AMOUNT", "The amount is too large.", field=field)
    return amount


class Leg(NamedTuple):
    """One entry of a transfer: ``amount`` into (or, negative, out of) the account ``key``.

    Legs on HELD accounts name the hold they belong to; other legs must not.
    """

    key: AccountKey
    amount: Decimal
    hold: str | None = None


class NewHold(NamedTuple):
    reference: str
    user_id: int
    asset_id: int


@dataclass(slots=True)
class _Account:
    id: int
    key: AccountKey
    asset_code: str = ""
    precision: int = 0
    balance: Decimal = ZERO
    row: str = ""  # ctid once locked
    delta: Decimal = ZERO


@dataclass(slots=True)
class _Hold:
    row: str  # ctid, stable while the hold is locked
    id: int
    reference: str
    user_id: int
    asset_id: int
    amount: Decimal
    remaining: Decimal
    status: str
    changed: bool = False


# How the statements reach rows, whatever the table sizes. A lookup by key
# is a LATERAL subquery with LIMIT 1, which PostgreSQL runs as one index probe
# per key: a plain join or "= ANY(array)" lets the planner pick a sequential
# scan of the whole table once a batch touches a thousand rows, and the cost
# then grows with the ledger. Rows are locked the same way, one probe per id
# in ascending id order, with FOR UPDATE on the single-table subquery (a
# locking join can silently drop rows that were updated concurrently). The
# locked rows' physical addresses (ctid) cannot change before our own update,
# so the bulk UPDATEs find them by address, without any index, joining on ctid
# alone. Their plans are generic (prepared statements, exchange.core.sql): a
# nested loop of one TID probe per row, or, for a table of a few pages or one
# not yet analyzed (any of them on a new installation, until autovacuum's first
# ANALYZE: exchange.core.vacuum), a hash join of its sequential scan, each linear
# in what it reads. They used to name the addresses with "ctid = ANY(array)" as
# well: PostgreSQL then tests that array, element by element, against every row
# a sequential scan reads, which made the accounts update 1.4 ms for 40 rows of
# 526 instead of 0.2 ms, and the largest part of a matcher's database time
# (docs/BENCHMARKS.md, "Warm keys, collector pauses, alert storms, row addresses").

_HOLD_COLUMNS = "ctid, id, reference, user_id, asset_id, amount, amount_remaining, status"

_INSERT_HOLDS = f"""
    INSERT INTO wallet_hold (reference, user_id, asset_id, amount, amount_remaining, status)
    SELECT n.reference, n.user_id, n.asset_id, 0, 0, 'OPEN'
    FROM unnest(%b::varchar[], %b::bigint[], %b::bigint[]) AS n(reference, user_id, asset_id)
    ON CONFLICT (reference) DO NOTHING
    RETURNING {_HOLD_COLUMNS}
"""

_HOLD_IDS = """
    SELECT h.id FROM unnest(%b::varchar[]) AS r(reference)
    CROSS JOIN LATERAL (SELECT id FROM wallet_hold WHERE reference = r.reference LIMIT 1) h
"""

_LOCK_HOLDS = f"""
    SELECT h.* FROM unnest(%s::bigint[]) AS k(id)
    CROSS JOIN LATERAL (SELECT {_HOLD_COLUMNS} FROM wallet_hold WHERE id = k.id FOR UPDATE) h
"""

_ENSURE_ACCOUNTS = """
    INSERT INTO wallet_account (user_id, asset_id, kind, balance)
    SELECT k.user_id, k.asset_id, k.kind, 0
    FROM unnest(%b::bigint[], %b::bigint[], %b::varchar[]) AS k(user_id, asset_id, kind)
    ON CONFLICT DO NOTHING
"""

_ACCOUNT_IDS = """
    SELECT a.id, k.user_id, k.asset_id, k.kind
    FROM unnest(%b::bigint[], %b::bigint[], %b::varchar[]) AS k(user_id, asset_id, kind)
    CROSS JOIN LATERAL (
        SELECT id FROM wallet_account WHERE user_id = k.user_id AND asset_id = k.asset_id AND kind = k.kind LIMIT 1
    ) a
    UNION ALL
    SELECT a.id, NULL, k.asset_id, k.kind
    FROM unnest(%b::bigint[], %b::varchar[]) AS k(asset_id, kind)
    CROSS JOIN LATERAL (
        SELECT id FROM wallet_account WHERE user_id IS NULL AND asset_id = k.asset_id AND kind = k.kind LIMIT 1
    ) a
"""

_ASSETS = "SELECT id, code, precision FROM exchange_asset WHERE id = ANY(%b::bigint[])"

_LOCK_ACCOUNTS = """
    SELECT a.* FROM unnest(%s::bigint[]) AS k(id)
    CROSS JOIN LATERAL (SELECT ctid, id, balance FROM wallet_account WHERE id = k.id FOR UPDATE) a
"""

_ALLOCATE_TRANSACTION_IDS = (
    "SELECT nextval(pg_get_serial_sequence('wallet_ledgertransaction', 'id')) FROM generate_series(1, %b)"
)

# The bulk statements take numbers and row addresses as array literals
# (exchange.core.sql.array_literal, tid_literal); strings go as real arrays.
_INSERT_JOURNAL = """
    WITH inserted_transactions AS (
        INSERT INTO wallet_ledgertransaction (id, kind, reference, memo, actor_id)
        SELECT * FROM unnest(%s::bigint[], %b::varchar[], %b::varchar[], %b::text[], %s::bigint[])
    )
    INSERT INTO wallet_ledgerentry (transaction_id, account_id, asset_id, amount, hold_id)
    SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::numeric[], %s::bigint[])
"""

_UPDATE_ACCOUNTS = """
    UPDATE wallet_account a SET balance = a.balance + d.delta, updated_at = statement_timestamp()
    FROM unnest(%s::tid[], %s::numeric[]) AS d(row, delta)
    WHERE a.ctid = d.row
"""

_UPDATE_HOLDS = """
    UPDATE wallet_hold h
    SET amount = d.amount, amount_remaining = d.remaining, status = d.status, updated_at = statement_timestamp(),
        closed_at = CASE WHEN d.status = 'CLOSED' THEN statement_timestamp() END
    FROM unnest(%s::tid[], %s::numeric[], %s::numeric[], %b::varchar[]) AS d(row, amount, remaining, status)
    WHERE h.ctid = d.row
"""


# One balance.changed event per (user, asset), in the order given, built by
# PostgreSQL (no JSON made in Python). Balances come from the posting, which
# knows them for every account it locked; the kind of account it did not lock
# (a deposit locks AVAILABLE only) is read unlocked: it cannot change
# meanwhile, since every posting that touches a HELD account locks the
# AVAILABLE one too. COALESCE reads it only when the posting did not know it.
_INSERT_BALANCE_EVENTS = """
    INSERT INTO exchange_outboxevent (topic, key, event_type, version, payload)
    SELECT 'balance.events', p.user_id::text, 'balance.changed', 1,
           json_build_object(
               'user_id', p.user_id, 'asset', s.code,
               'available', trim_scale(COALESCE(p.available, (
                   SELECT balance FROM wallet_account
                   WHERE user_id = p.user_id AND asset_id = p.asset_id AND kind = 'AVAILABLE' LIMIT 1), 0))::text,
               'held', trim_scale(COALESCE(p.held, (
                   SELECT balance FROM wallet_account
                   WHERE user_id = p.user_id AND asset_id = p.asset_id AND kind = 'HELD' LIMIT 1), 0))::text)
    FROM unnest(%s::bigint[], %s::bigint[], %s::numeric[], %s::numeric[]) WITH ORDINALITY
        AS p(user_id, asset_id, available, held, n)
    JOIN exchange_asset s ON s.id = p.asset_id
    ORDER BY p.n
"""


class _Transaction(NamedTuple):
    kind: str
    reference: str
    memo: str
    actor_id: int | None
    entries: list[tuple[_Account, Decimal, _Hold | None]]


class Posting:
    """A batch of journal transactions over locked accounts and holds, written in bulk."""

    def __init__(
        self,
        *,
        accounts: Iterable[AccountKey] = (),
        holds: Iterable[str] = (),
        new_holds: Iterable[NewHold] = (),
    ):
        if not connection.in_atomic_block:
            raise LedgerUsageError("a Posting must run inside transaction.atomic")
        self._transactions: list[_Transaction] = []
        self._written = False
        self.holds: dict[str, _Hold] = {}
        self.accounts: dict[AccountKey, _Account] = {}
        with server_cursor() as cursor:
            self._insert_holds(cursor, list(new_holds))
            self._lock_holds(cursor, set(holds) - set(self.holds))
            keys = set(accounts)
            for hold in self.holds.values():
                keys.add((hold.user_id, hold.asset_id, AVAILABLE))
                keys.add((hold.user_id, hold.asset_id, HELD))
            self._lock_accounts(cursor, keys)

    # -- locking ---------------------------------------------------------------

    def _insert_holds(self, cursor, new_holds: list[NewHold]) -> None:
        if not new_holds:
            return
        references = [hold.reference for hold in new_holds]
        if len(set(references)) != len(references):
            raise LedgerUsageError(f"a hold reference appears twice in one batch: {references}")
        cursor.execute(
            _INSERT_HOLDS,
            [references, [hold.user_id for hold in new_holds], [hold.asset_id for hold in new_holds]],
        )
        for row in cursor.fetchall():
            self.holds[row[2]] = _Hold(*row)
        taken = [reference for reference in references if reference not in self.holds]
        if taken:
            raise LedgerUsageError(f"hold reference already used: {', '.join(taken)}")

    def _lock_holds(self, cursor, references: set[str]) -> None:
        if not references:
            return
        cursor.execute(_HOLD_IDS, [sorted(references)])
        ids = sorted(row[0] for row in cursor.fetchall())
        cursor.execute(_LOCK_HOLDS, [array_literal(ids)])
        for row in cursor.fetchall():
            self.holds[row[2]] = _Hold(*row)
        unknown = references - set(self.holds)
        if unknown:
            raise LedgerUsageError(f"no hold with reference {', '.join(sorted(unknown))}")

    def _lock_accounts(self, cursor, keys: set[AccountKey]) -> None:
        if not keys:
            return
        missing = self._resolve_accounts(cursor, keys)
        if missing:
            # A fixed insertion order, so that two postings creating the same
            # new accounts wait for each other instead of deadlocking. This
            # happens before any account is locked.
            ordered = sorted(missing, key=lambda key: (key[0] or 0, key[1], key[2]))
            cursor.execute(
                _ENSURE_ACCOUNTS,
                [[key[0] for key in ordered], [key[1] for key in ordered], [key[2] for key in ordered]],
            )
            missing = self._resolve_accounts(cursor, missing)
            assert not missing, "every account exists after the ensure step"
        by_id = {account.id: account for account in self.accounts.values()}
        cursor.execute(_ASSETS, [sorted({key[1] for key in keys})])
        assets = {asset_id: (code, precision) for asset_id, code, precision in cursor.fetchall()}
        cursor.execute(_LOCK_ACCOUNTS, [array_literal(sorted(by_id))])
        locked = cursor.fetchall()
        assert len(locked) == len(by_id), "accounts are never deleted"
        for row, account_id, balance in locked:
            account = by_id[account_id]
            account.row, account.balance = row, balance
            account.asset_code, account.precision = assets[account.key[1]]

    def _resolve_accounts(self, cursor, keys: set[AccountKey]) -> set[AccountKey]:
        """Look up the ids of ``keys``; return the keys with no account yet."""
        users = [key for key in keys if key[0] is not None]
        operator = [key for key in keys if key[0] is None]
        cursor.execute(
            _ACCOUNT_IDS,
            [
                [key[0] for key in users], [key[1] for key in users], [key[2] for key in users],
                [key[1] for key in operator], [key[2] for key in operator],
            ],
        )
        for account_id, user_id, asset_id, kind in cursor.fetchall():
            key = (user_id, asset_id, kind)
            self.accounts[key] = _Account(account_id, key)
        return {key for key in keys if key not in self.accounts}

    # -- building ----------------------------------------------------------------

    def hold(self, reference: str) -> _Hold:
        try:
            return self.holds[reference]
        except KeyError:
            raise LedgerUsageError(f"hold {reference} was not locked by this posting") from None

    def transfer(
        self,
        *,
        kind: TransactionKind | str,
        reference: str,
        legs: Iterable[Leg],
        memo: str = "",
        actor_id: int | None = None,
    ) -> int | None:
        """Add one balanced transaction; return its position for ``write()``'s ids.

        Legs of zero are dropped; a transfer left with no legs posts nothing
        and returns None.
        """
        self._check_not_written()
        entries: list[tuple[_Account, Decimal, _Hold | None]] = []
        totals: dict[int, Decimal] = defaultdict(Decimal)
        with decimal.localcontext(LEDGER_CONTEXT):
            for key, amount, hold_reference in legs:
                if not amount:
                    continue
                account = self.accounts.get(key)
                if account is None:
                    raise LedgerUsageError(f"account {key} was not locked by this posting")
                if not is_quantized(amount, account.precision):
                    raise LedgerUsageError(
                        f"{amount} is not a whole number of {account.asset_code} units "
                        f"({account.precision} places) in {kind} {reference}"
                    )
                hold = None
                if key[2] == HELD:
                    hold = self.hold(hold_reference) if hold_reference else None
                    if hold is None or (hold.user_id, hold.asset_id) != key[:2]:
                        raise LedgerUsageError(f"an entry on {key} must name a hold of that user and asset")
                    if hold.status != Hold.Status.OPEN:
                        raise LedgerUsageError(f"hold {hold.reference} is closed")
                elif hold_reference is not None:
                    raise LedgerUsageError(f"only entries on HELD accounts name a hold, not {key}")
                totals[key[1]] += amount
                entries.append((account, amount, hold))
            if not entries:
                return None
            if any(totals.values()):
                raise LedgerUsageError(f"{kind} {reference} does not balance: {dict(totals)}")
            for account, amount, hold in entries:
                self._apply(account, amount, hold)
        self._transactions.append(_Transaction(str(kind), reference, memo, actor_id, entries))
        return len(self._transactions) - 1

    @staticmethod
    def _apply(account: _Account, amount: Decimal, hold: _Hold | None) -> None:
        balance = account.balance + amount
        if balance < 0 and account.key[2] in _USER_KINDS:
            what = "available" if account.key[2] == AVAILABLE else "held"
            raise ApplicationError(
                "INSUFFICIENT_FUNDS",
                f"Insufficient {account.asset_code}: {decimal_to_str(-amount)} needed, "
                f"{decimal_to_str(account.balance)} {what}.",
                extra={"asset": account.asset_code},
            )
        if hold is not None:
            remaining = hold.remaining + amount
            if remaining < 0:
                raise ApplicationError(
                    "INSUFFICIENT_FUNDS",
                    f"Insufficient {account.asset_code} on hold {hold.reference}: "
                    f"{decimal_to_str(-amount)} needed, {decimal_to_str(hold.remaining)} held.",
                    extra={"asset": account.asset_code, "reference": hold.reference},
                )
            hold.remaining = remaining
            if amount > 0:
                hold.amount += amount
            hold.changed = True
        account.balance = balance
        account.delta += amount

    def close_hold(self, reference: str) -> None:
        self._check_not_written()
        hold = self.hold(reference)
        if hold.status != Hold.Status.OPEN:
            raise LedgerUsageError(f"hold {reference} is already closed")
        if hold.remaining:
            raise LedgerUsageError(f"hold {reference} still has {hold.remaining} and cannot be closed")
        hold.status = Hold.Status.CLOSED
        hold.changed = True

    # -- writing -----------------------------------------------------------------

    def _check_not_written(self) -> None:
        if self._written:
            raise LedgerUsageError("this posting was written; start a new one")

    def write(self) -> list[int]:
        """Write every transfer and the new balances, once; return the transaction ids in order."""
        self._check_not_written()
        self._written = True
        transaction_ids: list[int] = []
        with server_cursor() as cursor:
            if self._transactions:
                cursor.execute(_ALLOCATE_TRANSACTION_IDS, [len(self._transactions)])
                transaction_ids = [row[0] for row in cursor.fetchall()]
                try:
                    cursor.execute(_INSERT_JOURNAL, self._journal_columns(transaction_ids))
                except psycopg.errors.UniqueViolation as error:
                    if error.diag.constraint_name == "wallet_txn_unique_event_reference":
                        raise LedgerUsageError(f"already posted: {error.diag.message_detail}") from error
                    raise
            changed = [account for account in self.accounts.values() if account.delta]
            if changed:
                rows = tid_literal(a.row for a in changed)
                cursor.execute(_UPDATE_ACCOUNTS, [rows, array_literal(a.delta for a in changed)])
                assert cursor.rowcount == len(changed), "locked rows keep their address until updated"
                self._emit_balance_events(cursor, changed)
            holds = [hold for hold in self.holds.values() if hold.changed]
            if holds:
                rows = tid_literal(h.row for h in holds)
                cursor.execute(
                    _UPDATE_HOLDS,
                    [rows, array_literal(h.amount for h in holds), array_literal(h.remaining for h in holds),
                     [h.status for h in holds]],
                )
                assert cursor.rowcount == len(holds), "locked rows keep their address until updated"
        return transaction_ids

    def _emit_balance_events(self, cursor, changed: list[_Account]) -> None:
        pairs = sorted({account.key[:2] for account in changed if account.key[0] is not None})
        if not pairs:
            return
        known = [(self.accounts.get((*pair, AVAILABLE)), self.accounts.get((*pair, HELD))) for pair in pairs]
        cursor.execute(_INSERT_BALANCE_EVENTS, [
            array_literal(pair[0] for pair in pairs), array_literal(pair[1] for pair in pairs),
            array_literal(available.balance if available else None for available, _ in known),
            array_literal(held.balance if held else None for _, held in known),
        ])

    def _journal_columns(self, transaction_ids: list[int]) -> list[list]:
        entry_transactions, entry_accounts, entry_assets, entry_amounts, entry_holds = [], [], [], [], []
        for transaction_id, txn in zip(transaction_ids, self._transactions):
            for account, amount, hold in txn.entries:
                entry_transactions.append(transaction_id)
                entry_accounts.append(account.id)
                entry_assets.append(account.key[1])
                entry_amounts.append(amount)
                entry_holds.append(hold.id if hold else None)
        return [
            array_literal(transaction_ids),
            [txn.kind for txn in self._transactions],
            [txn.reference for txn in self._transactions],
            [txn.memo for txn in self._transactions],
            array_literal(txn.actor_id for txn in self._transactions),
            array_literal(entry_transactions),
            array_literal(entry_accounts),
            array_literal(entry_assets),
            array_literal(entry_amounts),
            array_literal(entry_holds),
        ]
