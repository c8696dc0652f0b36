"""The ledger's invariants, each one SQL aggregate over the whole ledger.

``ledger_violations()`` returns every violation found (an empty list means
the ledger is sound); ``manage.py check_ledger`` prints them and tests call
``assert_ledger_sound()`` after every randomized run. Each ``Violation``
names the check, says what is wrong and lists the ids of the rows involved.

What the held balances must be depends on what holds them, so apps register
a check per hold reference prefix: ``register_hold_check("order", fn)``,
where ``fn(holds)`` receives the holds whose reference starts with
``"order:"`` (a QuerySet) and returns violations. The "withdrawal" check is
registered here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable, Iterable

from django.db import connection
from django.db.models import CharField, Exists, OuterRef, QuerySet, Value
from django.db.models.functions import Cast, Concat

from exchange.core.fields import decimal_to_str
from wallet.models import Hold, Withdrawal

ROW_LIMIT = 100


@dataclass(frozen=True)
class Violation:
    check: str
    message: str
    rows: dict[str, list[int]] = field(default_factory=dict)

    def __str__(self) -> str:
        rows = "; ".join(f"{table} {', '.join(map(str, ids))}" for table, ids in self.rows.items() if ids)
        return f"[{self.check}] {self.message}" + (f" (rows: {rows})" if rows else "")


def _rows(sql: str, params: Iterable = ()) -> list[tuple]:
    """Rows of ``sql`` (its last parameter is the row limit), amounts as plain decimal strings."""
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, ROW_LIMIT])
        return [
            tuple(decimal_to_str(value) if isinstance(value, Decimal) else value for value in row)
            for row in cursor.fetchall()
        ]


def _transactions_balance() -> list[Violation]:
    unbalanced = [
        Violation(
            "transaction_balances",
            f"journal transaction {txn} does not balance: its {code} entries sum to {total}",
            {"wallet_ledgertransaction": [txn], "wallet_ledgerentry": entries},
        )
        for txn, code, total, entries in _rows(
            """
            SELECT e.transaction_id, s.code, sum(e.amount), array_agg(e.id ORDER BY e.id)
            FROM wallet_ledgerentry e JOIN exchange_asset s ON s.id = e.asset_id
            GROUP BY e.transaction_id, s.code
            HAVING sum(e.amount) <> 0
            ORDER BY 1 LIMIT %s
            """
        )
    ]
    empty = [
        Violation(
            "transaction_balances", f"journal transaction {txn} has no entries", {"wallet_ledgertransaction": [txn]}
        )
        for (txn,) in _rows(
            """
            SELECT t.id FROM wallet_ledgertransaction t
            WHERE NOT EXISTS (SELECT 1 FROM wallet_ledgerentry e WHERE e.transaction_id = t.id)
            ORDER BY 1 LIMIT %s
            """
        )
    ]
    return unbalanced + empty


def _account_balances_match_entries() -> list[Violation]:
    return [
        Violation(
            "account_balance_matches_entries",
            f"account {account} ({kind}) caches a balance of {balance} but its entries sum to {total}",
            {"wallet_account": [account]},
        )
        for account, kind, balance, total in _rows(
            """
            SELECT a.id, a.kind, a.balance, coalesce(s.total, 0)
            FROM wallet_account a
            LEFT JOIN (SELECT account_id, sum(amount) AS total FROM wallet_ledgerentry GROUP BY account_id) s
                ON s.account_id = a.id
            WHERE a.balance <> coalesce(s.total, 0)
            ORDER BY 1 LIMIT %s
            """
        )
    ]


def _user_balances_not_negative() -> list[Violation]:
    return [
        Violation(
            "user_balance_not_negative",
            f"user {user}'s {kind} account {account} is negative: {balance}",
            {"wallet_account": [account]},
        )
        for account, user, kind, balance in _rows(
            """
            SELECT id, user_id, kind, balance FROM wallet_account
            WHERE kind IN ('AVAILABLE', 'HELD') AND balance < 0
            ORDER BY 1 LIMIT %s
            """
        )
    ]


def _asset_totals_zero() -> list[Violation]:
    return [
        Violation(
            "asset_total_zero",
            f"the accounts of {code} sum to {total} instead of 0: money was created or destroyed",
            {"exchange_asset": [asset]},
        )
        for asset, code, total in _rows(
            """
            SELECT a.asset_id, s.code, sum(a.balance)
            FROM wallet_account a JOIN exchange_asset s ON s.id = a.asset_id
            GROUP BY a.asset_id, s.code HAVING sum(a.balance) <> 0
            ORDER BY 1 LIMIT %s
            """
        )
    ]


def _entries_match_accounts() -> list[Violation]:
    return [
        Violation(
            "entry_matches_account",
            f"entry {entry} on account {account}: {problem}",
            {"wallet_ledgerentry": [entry], "wallet_account": [account], "wallet_hold": [hold] if hold else []},
        )
        for entry, account, hold, problem in _rows(
            """
            SELECT e.id, e.account_id, e.hold_id,
                CASE
                    WHEN t.id IS NULL THEN 'its transaction ' || e.transaction_id || ' does not exist'
                    WHEN a.id IS NULL THEN 'the account does not exist'
                    WHEN e.asset_id <> a.asset_id THEN 'its asset differs from the account''s'
                    WHEN a.kind = 'HELD' AND h.id IS NULL THEN 'an entry on a HELD account names no hold'
                    WHEN a.kind <> 'HELD' THEN 'only entries on HELD accounts name a hold'
                    ELSE 'its hold belongs to another user or asset'
                END
            FROM wallet_ledgerentry e
            LEFT JOIN wallet_ledgertransaction t ON t.id = e.transaction_id
            LEFT JOIN wallet_account a ON a.id = e.account_id
            LEFT JOIN wallet_hold h ON h.id = e.hold_id
            WHERE t.id IS NULL OR a.id IS NULL OR e.asset_id <> a.asset_id
               OR (a.kind = 'HELD') <> (e.hold_id IS NOT NULL)
               OR (e.hold_id IS NOT NULL AND (h.id IS NULL OR h.user_id <> a.user_id OR h.asset_id <> a.asset_id))
            ORDER BY 1 LIMIT %s
            """
        )
    ]


def _holds_match_entries() -> list[Violation]:
    return [
        Violation("hold_matches_entries", f"hold {hold} ({reference}): {problem}", {"wallet_hold": [hold]})
        for hold, reference, problem in _rows(
            """
            SELECT h.id, h.reference,
                CASE
                    WHEN h.amount_remaining < 0 THEN 'remaining is negative: ' || trim_scale(h.amount_remaining)
                    WHEN h.amount_remaining <> coalesce(s.total, 0) THEN
                        'remaining is ' || trim_scale(h.amount_remaining)
                        || ' but its entries sum to ' || trim_scale(coalesce(s.total, 0))
                    WHEN h.status = 'CLOSED' AND h.amount_remaining <> 0 THEN
                        'closed with ' || trim_scale(h.amount_remaining) || ' remaining'
                    ELSE 'amount is ' || trim_scale(h.amount)
                        || ' but ' || trim_scale(coalesce(s.added, 0)) || ' was put on it'
                END
            FROM wallet_hold h
            LEFT JOIN (
                SELECT hold_id, sum(amount) AS total, sum(amount) FILTER (WHERE amount > 0) AS added
                FROM wallet_ledgerentry WHERE hold_id IS NOT NULL GROUP BY hold_id
            ) s ON s.hold_id = h.id
            WHERE h.amount_remaining < 0
               OR h.amount_remaining <> coalesce(s.total, 0)
               OR (h.status = 'CLOSED' AND h.amount_remaining <> 0)
               OR h.amount <> coalesce(s.added, 0)
            ORDER BY 1 LIMIT %s
            """
        )
    ]


def _held_balances_match_holds() -> list[Violation]:
    return [
        Violation(
            "held_balance_matches_holds",
            f"user {user}'s HELD {code} is {balance} but their holds have {total} remaining",
            {"wallet_account": [account] if account else [], "wallet_hold": holds or []},
        )
        for account, user, code, balance, total, holds in _rows(
            """
            SELECT a.id, coalesce(a.user_id, h.user_id),
                   (SELECT code FROM exchange_asset WHERE id = coalesce(a.asset_id, h.asset_id)),
                   coalesce(a.balance, 0), coalesce(h.total, 0), h.ids
            FROM (SELECT id, user_id, asset_id, balance FROM wallet_account WHERE kind = 'HELD') a
            FULL JOIN (
                SELECT user_id, asset_id, sum(amount_remaining) AS total,
                       (array_agg(id ORDER BY id) FILTER (WHERE amount_remaining <> 0))[1:20] AS ids
                FROM wallet_hold GROUP BY user_id, asset_id
            ) h ON h.user_id = a.user_id AND h.asset_id = a.asset_id
            WHERE coalesce(a.balance, 0) <> coalesce(h.total, 0)
            ORDER BY 2, 3 LIMIT %s
            """
        )
    ]


def _amounts_quantized() -> list[Violation]:
    return [
        Violation(
            "amount_quantized",
            f"{table} {row}: {column} {amount} is finer than {code}'s {precision} decimal places",
            {table: [row]},
        )
        for table, row, column, amount, code, precision in _rows(
            """
            WITH amounts (tbl, row_id, col, amount, asset_id) AS (
                SELECT 'wallet_ledgerentry', id, 'amount', amount, asset_id FROM wallet_ledgerentry
                UNION ALL SELECT 'wallet_account', id, 'balance', balance, asset_id FROM wallet_account
                UNION ALL SELECT 'wallet_hold', id, 'amount', amount, asset_id FROM wallet_hold
                UNION ALL SELECT 'wallet_hold', id, 'amount_remaining', amount_remaining, asset_id FROM wallet_hold
                UNION ALL SELECT 'wallet_deposit', id, 'amount', amount, asset_id FROM wallet_deposit
                UNION ALL SELECT 'wallet_withdrawal', id, 'amount', amount, asset_id FROM wallet_withdrawal
            )
            SELECT x.tbl, x.row_id, x.col, x.amount, s.code, s.precision
            FROM amounts x JOIN exchange_asset s ON s.id = x.asset_id
            WHERE x.amount <> round(x.amount, s.precision)
            ORDER BY 1, 2 LIMIT %s
            """
        )
    ]


def _external_matches_deposits_and_withdrawals() -> list[Violation]:
    return [
        Violation(
            "external_matches_deposits_and_withdrawals",
            f"EXTERNAL {code} is {external} but completed withdrawals ({sent}) less deposits ({deposited}) "
            f"make {expected}",
            {"exchange_asset": [asset]},
        )
        for asset, code, external, sent, deposited, expected in _rows(
            """
            SELECT s.id, s.code, coalesce(a.balance, 0), coalesce(w.total, 0), coalesce(d.total, 0),
                   coalesce(w.total, 0) - coalesce(d.total, 0)
            FROM exchange_asset s
            LEFT JOIN wallet_account a ON a.asset_id = s.id AND a.user_id IS NULL AND a.kind = 'EXTERNAL'
            LEFT JOIN (SELECT asset_id, sum(amount) AS total FROM wallet_deposit GROUP BY asset_id) d
                ON d.asset_id = s.id
            LEFT JOIN (SELECT asset_id, sum(amount) AS total FROM wallet_withdrawal
                       WHERE status = 'COMPLETED' GROUP BY asset_id) w ON w.asset_id = s.id
            WHERE coalesce(a.balance, 0) <> coalesce(w.total, 0) - coalesce(d.total, 0)
            ORDER BY 1 LIMIT %s
            """
        )
    ]


def _batches_match_trades() -> list[Violation]:
    """Each matcher batch (a MATCH transaction, "match:<symbol>:<first>:<last>") moved exactly
    what its trades say: per (user, asset) its AVAILABLE and HELD entries together sum to what
    the user's trades of sequences first..last received less fees and paid, and its FEES
    entries to those trades' fees. Releases, the rest of the batch, can then only move money
    between one user's own HELD and AVAILABLE accounts of one asset (what each hold keeps is
    proven by the per-reference hold checks). The matcher writes these transactions
    (docs/LEDGER.md, "Netting"); the trades are the orders app's table, read by name here.
    Retention deletes old trades, except those of users under a legal hold, so a batch is
    proven only while all its trades are kept: its memo records how many it settled ("570
    trades"), and a batch with fewer left is skipped, as is one older than the trades'
    retention."""
    from django.conf import settings

    from exchange.audit.retention import retention_cutoff

    purged_before = retention_cutoff(settings.RETENTION_TRADES_DAYS) or "-infinity"
    unknown = [
        Violation("batch_matches_trades", f"matcher batch {txn} ({reference}) names no market and sequence range",
                  {"wallet_ledgertransaction": [txn]})
        for txn, reference in _rows(
            """
            SELECT t.id, t.reference FROM wallet_ledgertransaction t
            WHERE t.kind = 'MATCH' AND (
                t.reference !~ '^match:[^:]+:[0-9]+:[0-9]+$'
                OR NOT EXISTS (SELECT 1 FROM exchange_market m WHERE m.symbol = split_part(t.reference, ':', 2)))
            ORDER BY 1 LIMIT %s
            """
        )
    ]
    return unknown + [
        Violation(
            "batch_matches_trades",
            f"matcher batch {txn} ({reference}): {'the operator' if user is None else f'user {user}'} "
            f"{code} entries sum to {actual} but its trades make {expected}",
            {"wallet_ledgertransaction": [txn]},
        )
        for txn, reference, user, code, actual, expected in _rows(
            """
            WITH batches AS (
                SELECT t.id, t.reference, m.id AS market_id, m.base_id, m.quote_id,
                       split_part(t.reference, ':', 3)::bigint AS first_sequence,
                       split_part(t.reference, ':', 4)::bigint AS last_sequence
                FROM wallet_ledgertransaction t
                JOIN exchange_market m ON m.symbol = split_part(t.reference, ':', 2)
                WHERE t.kind = 'MATCH' AND t.reference ~ '^match:[^:]+:[0-9]+:[0-9]+$' AND t.created_at >= %s
                  AND (t.memo !~ '^[0-9]+ trades$' OR split_part(t.memo, ' ', 1)::bigint = (
                      SELECT count(*) FROM orders_trade tr
                      WHERE tr.market_id = m.id
                        AND tr.sequence BETWEEN split_part(t.reference, ':', 3)::bigint
                                            AND split_part(t.reference, ':', 4)::bigint))
            ), expected AS (
                SELECT b.id, x.user_id, x.asset_id, sum(x.amount) AS amount
                FROM batches b
                JOIN orders_trade tr ON tr.market_id = b.market_id
                    AND tr.sequence BETWEEN b.first_sequence AND b.last_sequence
                CROSS JOIN LATERAL (
                    SELECT CASE WHEN tr.taker_side = 'BUY' THEN tr.taker_user_id ELSE tr.maker_user_id END AS buyer,
                           CASE WHEN tr.taker_side = 'BUY' THEN tr.maker_user_id ELSE tr.taker_user_id END AS seller,
                           CASE WHEN tr.taker_side = 'BUY' THEN tr.taker_fee ELSE tr.maker_fee END AS buyer_fee,
                           CASE WHEN tr.taker_side = 'BUY' THEN tr.maker_fee ELSE tr.taker_fee END AS seller_fee
                ) p
                CROSS JOIN LATERAL (VALUES
                    (p.buyer, b.base_id, tr.quantity - p.buyer_fee),
                    (p.buyer, b.quote_id, -tr.notional),
                    (p.seller, b.quote_id, tr.notional - p.seller_fee),
                    (p.seller, b.base_id, -tr.quantity),
                    (NULL, b.base_id, p.buyer_fee),
                    (NULL, b.quote_id, p.seller_fee)
                ) x(user_id, asset_id, amount)
                GROUP BY 1, 2, 3
            ), actual AS (
                SELECT e.transaction_id AS id, a.user_id, e.asset_id, sum(e.amount) AS amount
                FROM batches b
                JOIN wallet_ledgerentry e ON e.transaction_id = b.id
                JOIN wallet_account a ON a.id = e.account_id
                GROUP BY 1, 2, 3
            ), differences AS MATERIALIZED (
                -- materialized: joined to the batches directly, the planner re-ran the full join once per batch
                SELECT coalesce(x.id, y.id) AS id, coalesce(x.user_id, y.user_id) AS user_id,
                       coalesce(x.asset_id, y.asset_id) AS asset_id,
                       coalesce(y.amount, 0) AS actual, coalesce(x.amount, 0) AS expected
                FROM expected x
                FULL JOIN actual y
                    ON y.id = x.id AND y.user_id IS NOT DISTINCT FROM x.user_id AND y.asset_id = x.asset_id
                WHERE coalesce(x.amount, 0) <> coalesce(y.amount, 0)
            )
            SELECT d.id, b.reference, d.user_id, (SELECT code FROM exchange_asset WHERE id = d.asset_id),
                   d.actual, d.expected
            FROM differences d JOIN batches b ON b.id = d.id
            ORDER BY 1, 3 LIMIT %s
            """,
            [purged_before],
        )
    ]


# -- per reference type ------------------------------------------------------------

HoldCheck = Callable[[QuerySet[Hold]], Iterable[Violation]]
_hold_checks: dict[str, HoldCheck] = {}


def register_hold_check(prefix: str, check: HoldCheck) -> None:
    """Check the holds whose reference is "<prefix>:...": ``check(holds)`` returns violations."""
    _hold_checks[prefix] = check


def _hold_checks_by_prefix() -> list[Violation]:
    violations: list[Violation] = []
    for prefix, check in sorted(_hold_checks.items()):
        violations.extend(check(Hold.objects.filter(reference__startswith=f"{prefix}:")))
    return violations


_withdrawals_by_reference = Withdrawal.objects.annotate(
    reference=Concat(Value("withdrawal:"), Cast("id", CharField()), output_field=CharField())
)


def withdrawal_hold_check(holds: QuerySet[Hold]) -> list[Violation]:
    """A REQUESTED withdrawal has an open hold of exactly its amount; any other has a closed hold;
    every "withdrawal:" hold belongs to a withdrawal; WITHDRAWALS_PENDING equals the APPROVED ones."""
    mismatched = [
        Violation("withdrawal_holds", f"withdrawal {withdrawal} ({status}): {problem}",
                  {"wallet_withdrawal": [withdrawal], "wallet_hold": [hold] if hold else []})
        for withdrawal, status, hold, problem in _rows(
            """
            SELECT w.id, w.status, h.id,
                CASE
                    WHEN h.id IS NULL THEN 'it has no hold'
                    WHEN h.user_id <> w.user_id OR h.asset_id <> w.asset_id THEN 'its hold is of another user or asset'
                    WHEN h.amount <> w.amount THEN
                        'its hold was for ' || trim_scale(h.amount) || ', not ' || trim_scale(w.amount)
                    WHEN w.status = 'REQUESTED' THEN
                        'its hold should be open with ' || trim_scale(w.amount) || ' remaining, not '
                        || h.status || ' with ' || trim_scale(h.amount_remaining)
                    ELSE 'its hold should be closed'
                END
            FROM wallet_withdrawal w
            LEFT JOIN wallet_hold h ON h.reference = 'withdrawal:' || w.id
            WHERE h.id IS NULL
               OR h.user_id <> w.user_id OR h.asset_id <> w.asset_id OR h.amount <> w.amount
               OR (w.status = 'REQUESTED' AND (h.status <> 'OPEN' OR h.amount_remaining <> w.amount))
               OR (w.status <> 'REQUESTED' AND h.status <> 'CLOSED')
            ORDER BY 1 LIMIT %s
            """
        )
    ]
    orphans = [
        Violation("withdrawal_holds", f"hold {hold.pk} ({hold.reference}) belongs to no withdrawal",
                  {"wallet_hold": [hold.pk]})
        for hold in holds.filter(~Exists(_withdrawals_by_reference.filter(reference=OuterRef("reference"))))
        .order_by("id")[:ROW_LIMIT]
    ]
    pending = [
        Violation(
            "withdrawal_holds",
            f"WITHDRAWALS_PENDING {code} is {balance} but APPROVED withdrawals total {total}",
            {"wallet_account": [account] if account else []},
        )
        for account, code, balance, total in _rows(
            """
            SELECT a.id, s.code, coalesce(a.balance, 0), coalesce(w.total, 0)
            FROM exchange_asset s
            LEFT JOIN wallet_account a ON a.asset_id = s.id AND a.user_id IS NULL AND a.kind = 'WITHDRAWALS_PENDING'
            LEFT JOIN (SELECT asset_id, sum(amount) AS total FROM wallet_withdrawal
                       WHERE status = 'APPROVED' GROUP BY asset_id) w ON w.asset_id = s.id
            WHERE coalesce(a.balance, 0) <> coalesce(w.total, 0)
            ORDER BY s.id LIMIT %s
            """
        )
    ]
    return mismatched + orphans + pending


register_hold_check("withdrawal", withdrawal_hold_check)

CHECKS: list[Callable[[], list[Violation]]] = [
    _transactions_balance,
    _account_balances_match_entries,
    _user_balances_not_negative,
    _asset_totals_zero,
    _entries_match_accounts,
    _holds_match_entries,
    _held_balances_match_holds,
    _amounts_quantized,
    _external_matches_deposits_and_withdrawals,
    _batches_match_trades,
    _hold_checks_by_prefix,
]


def ledger_violations() -> list[Violation]:
    """Every invariant violation in the ledger (at most ROW_LIMIT per check)."""
    return [violation for check in CHECKS for violation in check()]


def assert_ledger_sound() -> None:
    violations = ledger_violations()
    assert not violations, "ledger invariants violated:\n" + "\n".join(map(str, violations))
