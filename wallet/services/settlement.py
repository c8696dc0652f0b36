"""Netted settlement of one matcher batch: ONE journal transaction for all its trades and releases.

``batch_settle`` is what the matcher calls once per batch (docs/LEDGER.md,
"Netting"). Its legs are the batch's trades already summed per (user, asset,
account kind, hold) by the caller; the hold releases and true-ups are
computed here from the holds' remaining amounts after those legs, and added
to the same sums. The result is posted as one transaction with one entry per
(account, hold): for a batch of 1,000 commands about 400 entries instead of
about 5,400 in 1,500 transactions. The per-trade detail stays in the trades
table; ``check_ledger``'s ``batch_matches_trades`` proves that each batch's
entries are exactly the sum over its trades (releases move money only
between a user's own HELD and AVAILABLE accounts of one asset).

Everything else is the ``Posting``'s: holds, then accounts locked in
ascending id order; every amount a whole number of units; no user balance
or hold below zero (``INSUFFICIENT_FUNDS``); the database trigger checks the
transaction balances per asset. A ``MATCH`` transaction's reference
(``match:<symbol>:<first sequence>:<last sequence>``) is unique: a batch can
be settled once.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from typing import Sequence

from django.db import transaction

from wallet.ledger import AVAILABLE, HELD, ZERO, Leg, LedgerUsageError, Posting, exact
from wallet.models import Hold, TransactionKind
from wallet.services.holds import HoldRelease

# (user id or None for the operator, asset id, account kind, hold reference or None)
NetKey = tuple[int | None, int, str, str | None]


@dataclass(frozen=True, slots=True)
class BatchSettlement:
    """One batch: ``legs`` (its trades netted, Decimal per key, may be empty) then ``releases`` in order.

    ``kind`` is MATCH for a batch with trades (its reference is then unique)
    and RELEASE for one that only gives funds back.
    """

    reference: str
    legs: dict[NetKey, Decimal]
    releases: Sequence[HoldRelease] = ()
    kind: str = TransactionKind.MATCH
    memo: str = ""


def _sort_key(key: NetKey):
    user_id, asset_id, kind, hold = key
    return (user_id or 0, asset_id, kind, hold or "")


@transaction.atomic
@exact
def batch_settle(*, settlement: BatchSettlement) -> int | None:
    """Post the batch as one journal transaction; return its id (None when it moved nothing).

    Cost: the Posting's lock queries (holds, accounts: 4-5 statements), one
    statement for the journal, one each for balances, holds and the
    ``balance.changed`` events. Raises like ``ledger_apply``.
    """
    accounts = {(user_id, asset_id, kind) for user_id, asset_id, kind, _ in settlement.legs}
    references = {hold for *_, hold in settlement.legs if hold is not None}
    references.update(release.reference for release in settlement.releases)
    posting = Posting(accounts=accounts, holds=references)

    amounts: dict[NetKey, Decimal] = defaultdict(Decimal)
    consumed: dict[str, Decimal] = defaultdict(Decimal)
    for key, amount in settlement.legs.items():
        user_id, asset_id, kind, hold = key
        if (kind == HELD) != (hold is not None):
            raise LedgerUsageError(f"{settlement.reference}: only HELD legs name a hold: {key}")
        if hold is not None:
            if amount > 0:
                raise LedgerUsageError(f"{settlement.reference}: a trade only takes from hold {hold}")
            consumed[hold] += amount
        amounts[key] += amount
    closing = []
    for release in settlement.releases:
        hold = posting.hold(release.reference)
        if hold.status != Hold.Status.OPEN:
            raise LedgerUsageError(f"hold {release.reference} is already closed")
        remaining = hold.remaining + consumed[release.reference]
        if release.keep is not None:
            if release.amount is not None or release.close:
                raise LedgerUsageError(f"hold {release.reference}: keep excludes amount and close")
            if not isinstance(release.keep, Decimal) or not ZERO <= release.keep <= remaining:
                raise LedgerUsageError(f"hold {release.reference} has {remaining} left, cannot keep {release.keep!r}")
            amount = remaining - release.keep
        else:
            amount = remaining if release.amount is None else release.amount
        if not isinstance(amount, Decimal) or amount < 0:
            raise LedgerUsageError(f"cannot release {amount!r} from hold {release.reference}")
        consumed[release.reference] -= amount
        amounts[(hold.user_id, hold.asset_id, HELD, hold.reference)] -= amount
        amounts[(hold.user_id, hold.asset_id, AVAILABLE, None)] += amount
        if release.close:
            closing.append(release.reference)

    position = posting.transfer(
        kind=settlement.kind,
        reference=settlement.reference,
        memo=settlement.memo,
        legs=[Leg((key[0], key[1], key[2]), amounts[key], key[3]) for key in sorted(amounts, key=_sort_key)],
    )
    for reference in closing:
        posting.close_hold(reference)
    transaction_ids = posting.write()
    return None if position is None else transaction_ids[position]
