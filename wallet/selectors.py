"""Reads of the ledger, always scoped to the user who asks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db.models import QuerySet

from exchange.core.errors import ApplicationError
from exchange.models import Asset
from exchange.selectors import asset_list
from wallet.models import Account, AccountKind, Deposit, Hold, LedgerEntry, Withdrawal


@dataclass(frozen=True)
class Balance:
    asset: str
    available: Decimal
    held: Decimal

    @property
    def total(self) -> Decimal:
        return self.available + self.held


def balances_of(*, user_ids, assets: dict[int, str]) -> dict[int, list[Balance]]:
    """{user id: one balance per asset of ``assets`` ({asset id: code}), zero
    where the user has nothing, ordered by asset code} in one query."""
    amounts: dict[tuple[int, int, str], Decimal] = {
        (user_id, asset_id, kind): balance
        for user_id, asset_id, kind, balance in Account.objects.filter(
            user_id__in=user_ids, asset_id__in=list(assets), kind__in=(AccountKind.AVAILABLE, AccountKind.HELD),
        ).values_list("user_id", "asset_id", "kind", "balance")
    }
    zero = Decimal(0)
    ordered = sorted(assets.items(), key=lambda item: item[1])
    return {
        user_id: [
            Balance(
                asset=code,
                available=amounts.get((user_id, asset_id, AccountKind.AVAILABLE), zero),
                held=amounts.get((user_id, asset_id, AccountKind.HELD), zero),
            )
            for asset_id, code in ordered
        ]
        for user_id in user_ids
    }


def balances_for_user(*, user) -> list[Balance]:
    """One balance per listed asset, zero where the user has nothing, ordered by asset code."""
    return balances_of(user_ids=[user.pk], assets={asset.pk: asset.code for asset in asset_list()})[user.pk]


def ledger_entries_for_user(
    *,
    user,
    asset: str | None = None,
    kind: str | None = None,
    account_kind: str | None = None,
    start_time: datetime | None = None,
    end_time: datetime | None = None,
) -> QuerySet[LedgerEntry]:
    """The user's own entries (AVAILABLE and HELD accounts), newest first.

    ``asset`` is a code (any case); ``kind`` is the journal transaction's
    kind; ``start_time`` is inclusive, ``end_time`` exclusive.
    """
    entries = LedgerEntry.objects.filter(account__in=Account.objects.filter(user=user).values("id"))
    if asset:
        entries = entries.filter(asset__code=asset.upper())
    if kind:
        entries = entries.filter(transaction__kind=kind)
    if account_kind:
        entries = entries.filter(account__kind=account_kind)
    if start_time:
        entries = entries.filter(transaction__created_at__gte=start_time)
    if end_time:
        entries = entries.filter(transaction__created_at__lt=end_time)
    return entries.select_related("transaction", "asset", "account").order_by("-id")


def withdrawals_for_user(*, user, status: str | None = None, asset: str | None = None) -> QuerySet[Withdrawal]:
    withdrawals = Withdrawal.objects.filter(user=user).select_related("asset").order_by("-id")
    if status:
        withdrawals = withdrawals.filter(status=status)
    if asset:
        withdrawals = withdrawals.filter(asset__code=asset.upper())
    return withdrawals


def deposits_for_user(*, user, asset: str | None = None) -> QuerySet[Deposit]:
    deposits = Deposit.objects.filter(user=user).select_related("asset").order_by("-id")
    if asset:
        deposits = deposits.filter(asset__code=asset.upper())
    return deposits


def asset_get(*, code: str, field: str = "asset") -> Asset:
    """The asset with ``code`` (case-insensitive), or ApplicationError UNKNOWN_ASSET naming ``field``."""
    asset = Asset.objects.filter(code=(code or "").strip().upper()).first()
    if asset is None:
        raise ApplicationError("UNKNOWN_ASSET", f"There is no asset {code!r}.", field=field)
    return asset


def hold_remaining(*, reference: str) -> Decimal:
    """What is still held under ``reference`` (0 for a closed hold)."""
    return Hold.objects.values_list("amount_remaining", flat=True).get(reference=reference)
