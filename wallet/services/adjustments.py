"""Operator corrections of a user's available balance, always with a reason."""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction

from exchange.audit import actions
from exchange.audit.services import audit_log_record, audit_origin
from exchange.core.errors import ApplicationError
from wallet.ledger import AVAILABLE, Leg, Posting, exact, validate_amount
from wallet.services.errors import own_account
from wallet.models import Account, AccountKind, LedgerTransaction, TransactionKind

ADJUSTMENTS = AccountKind.ADJUSTMENTS.value


@transaction.atomic
@exact
def balance_adjust(*, user, asset, amount: Decimal, actor, reason: str, audit: dict | None = None) -> LedgerTransaction:
    """Add ``amount`` (negative: take it away) to the user's AVAILABLE ``asset``, against ADJUSTMENTS.

    ``reason`` is required and stored with ``actor`` on the journal
    transaction; a negative adjustment can take at most what is available
    (INSUFFICIENT_FUNDS otherwise), never funds held for orders. Nobody
    adjusts their own account (403 OWN_ACCOUNT). In the back office,
    adjustments go through ``wallet.services.four_eyes``.
    """
    amount = validate_amount(asset=asset, amount=amount, signed=True)
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError("REASON_REQUIRED", "An adjustment needs a reason.", field="reason")
    if actor is None:
        raise ApplicationError("ACTOR_REQUIRED", "An adjustment needs the operator who makes it.")
    if actor.pk == user.pk:
        raise own_account()
    posting = Posting(accounts=[(None, asset.pk, ADJUSTMENTS), (user.pk, asset.pk, AVAILABLE)])
    posting.transfer(
        kind=TransactionKind.ADJUSTMENT,
        reference=f"user:{user.pk}",
        memo=reason,
        actor_id=actor.pk,
        legs=[Leg((None, asset.pk, ADJUSTMENTS), -amount), Leg((user.pk, asset.pk, AVAILABLE), amount)],
    )
    [transaction_id] = posting.write()
    available = Account.objects.get(user=user, asset=asset, kind=AVAILABLE).balance
    audit_log_record(
        action=actions.BALANCE_ADJUST, object_type="wallet.ledgertransaction", object_id=transaction_id,
        subject_user=user, before={"available": available - amount},
        after={"available": available, "asset": asset.code, "amount": amount, "reason": reason},
        **audit_origin(audit, staff=actor))
    return LedgerTransaction.objects.get(pk=transaction_id)
