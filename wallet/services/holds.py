"""Holds and trade settlement: what order placement and the matcher call.

Contract for callers (the orders app and the matcher):

- Amounts are ``Decimal`` and already whole numbers of the asset's smallest
  unit; anything else raises ``LedgerUsageError`` (a bug in the caller, the
  ledger never rounds). So do unknown, duplicate or closed hold references.
- Running short raises ``ApplicationError("INSUFFICIENT_FUNDS")`` naming the
  asset: placing or increasing a hold beyond the available balance, or
  consuming or releasing more than a hold has left.
- Every function is ``@transaction.atomic`` and nests in the caller's
  transaction: an error leaves nothing behind.
- ``ledger_apply`` applies a list of operations in order in one posting
  (one lock query per table, bulk writes): each operation sees the effect of
  the earlier ones, e.g. a release after two fills of the same hold releases
  exactly what the fills left.

Fees are charged on what each side receives: the buyer's fee in the base
asset, the seller's in the quote asset, so a hold never has to cover fees.
The caller computes them (``wallet.fees.fee_amount`` rounds down).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Callable, Sequence

from django.db import transaction

from exchange.core.errors import ApplicationError
from wallet.ledger import AVAILABLE, HELD, ZERO, Leg, LedgerUsageError, NewHold, Posting, exact
from wallet.models import AccountKind, Hold, TransactionKind

FEES = AccountKind.FEES.value


@dataclass(frozen=True, slots=True)
class HoldPlace:
    """Move ``amount`` of the user's AVAILABLE funds to HELD under a new hold ``reference``."""

    reference: str
    user_id: int
    asset_id: int
    amount: Decimal
    memo: str = ""


@dataclass(frozen=True, slots=True)
class HoldIncrease:
    """Move ``amount`` more of the hold owner's AVAILABLE funds under the open hold ``reference``."""

    reference: str
    amount: Decimal
    memo: str = ""


@dataclass(frozen=True, slots=True)
class HoldRelease:
    """Move ``amount`` (None: everything left) of the hold back to AVAILABLE; ``close`` closes
    the hold, which must then be empty.

    ``keep`` instead of ``amount`` releases everything above ``keep``: the
    matcher trues an order's hold up to exactly what its unfilled part still
    needs. A hold with less than ``keep`` left is a bug and raises.
    """

    reference: str
    amount: Decimal | None = None
    close: bool = False
    memo: str = ""
    keep: Decimal | None = None


@dataclass(frozen=True, slots=True)
class TradeSettlement:
    """One trade: ``quantity`` of base for ``notional`` of quote (exact, no rounding).

    buyer HELD quote   -notional           (from ``buyer_hold_reference``)
    seller AVAILABLE quote +notional - seller_fee, FEES quote +seller_fee
    seller HELD base   -quantity           (from ``seller_hold_reference``)
    buyer AVAILABLE base   +quantity - buyer_fee,  FEES base  +buyer_fee

    ``buyer_fee`` is in base and ``seller_fee`` in quote, each at most what
    that side receives. Buyer and seller may be the same user. One TRADE
    journal transaction whose reference (e.g. "trade:BTC-USDT:1234") can be
    settled only once.
    """

    reference: str
    base_asset_id: int
    quote_asset_id: int
    buyer_id: int
    seller_id: int
    buyer_hold_reference: str
    seller_hold_reference: str
    quantity: Decimal
    notional: Decimal
    buyer_fee: Decimal = ZERO
    seller_fee: Decimal = ZERO
    memo: str = ""


Operation = HoldPlace | HoldIncrease | HoldRelease | TradeSettlement


def _hold_add(posting: Posting, op: HoldPlace | HoldIncrease) -> int | None:
    """AVAILABLE -> HELD under the hold (HoldPlace's hold was inserted empty by the posting)."""
    _require_positive(op.amount, op.reference)
    hold = posting.hold(op.reference)
    user_asset = (hold.user_id, hold.asset_id)
    return posting.transfer(
        kind=TransactionKind.HOLD,
        reference=hold.reference,
        memo=op.memo,
        legs=[Leg((*user_asset, AVAILABLE), -op.amount), Leg((*user_asset, HELD), op.amount, hold.reference)],
    )


def _hold_release(posting: Posting, op: HoldRelease) -> int | None:
    hold = posting.hold(op.reference)
    if hold.status != Hold.Status.OPEN:
        raise LedgerUsageError(f"hold {op.reference} is already closed")
    if op.keep is not None:
        if op.amount is not None or op.close:
            raise LedgerUsageError(f"hold {op.reference}: keep excludes amount and close")
        if not isinstance(op.keep, Decimal) or not ZERO <= op.keep <= hold.remaining:
            raise LedgerUsageError(f"hold {op.reference} has {hold.remaining} left, cannot keep {op.keep!r}")
        amount = hold.remaining - op.keep
    else:
        amount = hold.remaining if op.amount is None else op.amount
    if not isinstance(amount, Decimal) or amount < 0:
        raise LedgerUsageError(f"cannot release {amount!r} from hold {op.reference}")
    user_asset = (hold.user_id, hold.asset_id)
    position = posting.transfer(
        kind=TransactionKind.RELEASE,
        reference=hold.reference,
        memo=op.memo,
        legs=[Leg((*user_asset, HELD), -amount, hold.reference), Leg((*user_asset, AVAILABLE), amount)],
    )
    if op.close:
        posting.close_hold(op.reference)
    return position


def _trade_settle(posting: Posting, op: TradeSettlement) -> int | None:
    for name in ("quantity", "notional"):
        _require_positive(getattr(op, name), op.reference, name)
    if not (isinstance(op.buyer_fee, Decimal) and ZERO <= op.buyer_fee <= op.quantity):
        raise LedgerUsageError(f"{op.reference}: buyer_fee {op.buyer_fee!r} must be between 0 and the quantity")
    if not (isinstance(op.seller_fee, Decimal) and ZERO <= op.seller_fee <= op.notional):
        raise LedgerUsageError(f"{op.reference}: seller_fee {op.seller_fee!r} must be between 0 and the notional")
    base, quote = op.base_asset_id, op.quote_asset_id
    if base == quote:
        raise LedgerUsageError(f"{op.reference}: base and quote are the same asset")
    return posting.transfer(
        kind=TransactionKind.TRADE,
        reference=op.reference,
        memo=op.memo,
        legs=[
            Leg((op.buyer_id, quote, HELD), -op.notional, op.buyer_hold_reference),
            Leg((op.seller_id, quote, AVAILABLE), op.notional - op.seller_fee),
            Leg((None, quote, FEES), op.seller_fee),
            Leg((op.seller_id, base, HELD), -op.quantity, op.seller_hold_reference),
            Leg((op.buyer_id, base, AVAILABLE), op.quantity - op.buyer_fee),
            Leg((None, base, FEES), op.buyer_fee),
        ],
    )


def _require_positive(amount, reference: str, name: str = "amount") -> None:
    if not isinstance(amount, Decimal) or not amount.is_finite() or amount <= 0:
        raise LedgerUsageError(f"{reference}: {name} must be a positive Decimal, not {amount!r}")


_APPLY: dict[type, Callable[[Posting, Operation], int | None]] = {
    HoldPlace: _hold_add,
    HoldIncrease: _hold_add,
    HoldRelease: _hold_release,
    TradeSettlement: _trade_settle,
}


def _posting_for(operations: Sequence[Operation]) -> Posting:
    new_holds: list[NewHold] = []
    references: set[str] = set()
    accounts = set()
    for op in operations:
        if isinstance(op, HoldPlace):
            new_holds.append(NewHold(op.reference, op.user_id, op.asset_id))
        elif isinstance(op, TradeSettlement):
            references.update((op.buyer_hold_reference, op.seller_hold_reference))
            accounts.update(
                {
                    (op.buyer_id, op.quote_asset_id, HELD),
                    (op.seller_id, op.quote_asset_id, AVAILABLE),
                    (op.seller_id, op.base_asset_id, HELD),
                    (op.buyer_id, op.base_asset_id, AVAILABLE),
                    (None, op.quote_asset_id, FEES),
                    (None, op.base_asset_id, FEES),
                }
            )
        elif isinstance(op, (HoldIncrease, HoldRelease)):
            references.add(op.reference)
        else:
            raise LedgerUsageError(f"not a ledger operation: {op!r}")
    return Posting(accounts=accounts, holds=references, new_holds=new_holds)


@exact
def _apply(operations: Sequence[Operation]) -> tuple[list[int | None], Posting]:
    posting = _posting_for(operations)
    positions = []
    for index, op in enumerate(operations):
        try:
            positions.append(_APPLY[type(op)](posting, op))
        except ApplicationError as error:
            if len(operations) > 1:
                error.extra["operation"] = index  # which operation of the batch fell short
            raise
    transaction_ids = posting.write()
    return [None if position is None else transaction_ids[position] for position in positions], posting


@transaction.atomic
def ledger_apply(operations: Sequence[Operation]) -> list[int | None]:
    """Apply ``operations`` in order, all or nothing; return each one's journal transaction id.

    The id is None for an operation that moved nothing (releasing an empty
    hold, for example just to close it). This is the matcher's entry point:
    one call per batch of engine events. An INSUFFICIENT_FUNDS error of a
    batch names the failing operation's index in ``error.extra["operation"]``.
    """
    return _apply(operations)[0]


@transaction.atomic
def funds_hold(*, user, asset, amount: Decimal, reference: str, memo: str = "") -> Hold:
    """Hold ``amount`` of the user's available ``asset`` under a new, unique ``reference``."""
    _, posting = _apply([HoldPlace(reference, user.pk, asset.pk, amount, memo)])
    return Hold.objects.get(pk=posting.hold(reference).id)


@transaction.atomic
def hold_increase(*, reference: str, amount: Decimal, memo: str = "") -> Hold:
    """Hold ``amount`` more of the owner's available funds under the open hold ``reference``."""
    _, posting = _apply([HoldIncrease(reference, amount, memo)])
    return Hold.objects.get(pk=posting.hold(reference).id)


@transaction.atomic
def hold_release(*, reference: str, amount: Decimal | None = None, close: bool = False, memo: str = "") -> Hold:
    """Release ``amount`` (None: all that is left) of the hold; ``close`` closes it (it must then be empty)."""
    _, posting = _apply([HoldRelease(reference, amount, close, memo)])
    return Hold.objects.get(pk=posting.hold(reference).id)


@transaction.atomic
def trade_settle(*, settlement: TradeSettlement) -> int:
    """Settle one trade; return its TRADE journal transaction id."""
    [transaction_id] = ledger_apply([settlement])
    return transaction_id


__all__ = [
    "HoldIncrease",
    "HoldPlace",
    "HoldRelease",
    "Operation",
    "TradeSettlement",
    "funds_hold",
    "hold_increase",
    "hold_release",
    "ledger_apply",
    "trade_settle",
]
