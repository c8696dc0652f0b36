"""Withdrawals: REQUESTED (funds held) -> APPROVED (funds with the operator) -> COMPLETED
(sent), or REQUESTED -> REJECTED (funds released).

Each transition locks the withdrawal row first, checks its status, then
posts through the ledger, so two operators clicking at once cannot move the
money twice; no staff member reviews their own withdrawal (403 OWN_ACCOUNT).
In the back office, approvals go through ``wallet.services.four_eyes``.
The hold of a withdrawal is "withdrawal:<id>".
"""

from __future__ import annotations

from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from exchange.audit import actions
from exchange.audit.services import audit_log_record, audit_origin
from exchange.core.errors import ApplicationError
from wallet.ledger import AVAILABLE, HELD, Leg, Posting, exact, validate_amount
from wallet.services.errors import own_account
from wallet.models import AccountKind, TransactionKind, Withdrawal
from wallet.services.holds import funds_hold

PENDING = AccountKind.WITHDRAWALS_PENDING.value
EXTERNAL = AccountKind.EXTERNAL.value


@transaction.atomic
@exact
def withdrawal_request(*, user, asset, amount: Decimal, address: str, audit: dict | None = None) -> Withdrawal:
    """Hold ``amount`` of the user's available ``asset`` for a withdrawal to ``address``.

    Every transition writes its audit row (WITHDRAWAL_REQUEST, _APPROVE,
    _REJECT, _COMPLETE) with the status before and after; ``audit`` is the
    request's ``audit_context`` (without one: the user, or the operator).
    """
    amount = validate_amount(asset=asset, amount=amount)
    address = (address or "").strip()
    if not address:
        raise ApplicationError("INVALID_ADDRESS", "A withdrawal needs a destination address.", field="address")
    withdrawal = Withdrawal.objects.create(user=user, asset=asset, amount=amount, address=address)
    funds_hold(user=user, asset=asset, amount=amount, reference=withdrawal.hold_reference, memo="withdrawal requested")
    audit_log_record(action=actions.WITHDRAWAL_REQUEST, object_type="wallet.withdrawal", object_id=withdrawal.pk,
                     subject_user=user, after=_state(withdrawal), **audit_origin(audit, user=user))
    return withdrawal


def _state(withdrawal: Withdrawal) -> dict:
    return {"status": withdrawal.status, "asset": withdrawal.asset.code, "amount": withdrawal.amount,
            "address": withdrawal.address, "reason": withdrawal.reason, "txid": withdrawal.txid}


def _record(action: str, withdrawal: Withdrawal, before: dict, *, actor, audit: dict | None) -> None:
    audit_log_record(action=action, object_type="wallet.withdrawal", object_id=withdrawal.pk,
                     subject_user=withdrawal.user_id, before=before, after=_state(withdrawal),
                     **audit_origin(audit, staff=actor))


def _locked(withdrawal: Withdrawal, *, expected: str, action: str, actor) -> Withdrawal:
    locked = Withdrawal.objects.select_for_update(of=("self",)).select_related("asset").get(pk=withdrawal.pk)
    if actor is not None and actor.pk == locked.user_id:
        raise own_account()
    if locked.status != expected:
        raise ApplicationError(
            "INVALID_WITHDRAWAL_STATE",
            f"Withdrawal {locked.pk} is {locked.status}; only a {expected} withdrawal can be {action}.",
            status_code=409,
            extra={"status": locked.status},
        )
    return locked


def _require(value: str, code: str, field: str, message: str) -> str:
    value = (value or "").strip()
    if not value:
        raise ApplicationError(code, message, field=field)
    return value


def _release_hold(withdrawal: Withdrawal, *, kind: str, to: tuple, actor, reason: str) -> None:
    """Post the withdrawal's held amount from its hold to the account ``to`` and close the hold."""
    posting = Posting(accounts=[to], holds=[withdrawal.hold_reference])
    posting.transfer(
        kind=kind,
        reference=withdrawal.hold_reference,
        memo=reason,
        actor_id=actor.pk,
        legs=[
            Leg((withdrawal.user_id, withdrawal.asset_id, HELD), -withdrawal.amount, withdrawal.hold_reference),
            Leg(to, withdrawal.amount),
        ],
    )
    posting.close_hold(withdrawal.hold_reference)
    posting.write()


@transaction.atomic
@exact
def withdrawal_approve(*, withdrawal: Withdrawal, actor, reason: str, audit: dict | None = None) -> Withdrawal:
    """Move the held funds to WITHDRAWALS_PENDING (closing the hold): the operator will send them."""
    reason = _require(reason, "REASON_REQUIRED", "reason", "Approving a withdrawal needs a reason.")
    withdrawal = _locked(withdrawal, expected=Withdrawal.Status.REQUESTED, action="approved", actor=actor)
    before = _state(withdrawal)
    _release_hold(withdrawal, kind=TransactionKind.WITHDRAWAL_APPROVE, to=(None, withdrawal.asset_id, PENDING),
                  actor=actor, reason=reason)
    withdrawal = _transition(withdrawal, Withdrawal.Status.APPROVED, actor=actor, reason=reason)
    _record(actions.WITHDRAWAL_APPROVE, withdrawal, before, actor=actor, audit=audit)
    return withdrawal


@transaction.atomic
@exact
def withdrawal_reject(*, withdrawal: Withdrawal, actor, reason: str, audit: dict | None = None) -> Withdrawal:
    """Release the held funds back to the user's available balance and close the hold."""
    reason = _require(reason, "REASON_REQUIRED", "reason", "Rejecting a withdrawal needs a reason.")
    withdrawal = _locked(withdrawal, expected=Withdrawal.Status.REQUESTED, action="rejected", actor=actor)
    before = _state(withdrawal)
    _release_hold(withdrawal, kind=TransactionKind.RELEASE, to=(withdrawal.user_id, withdrawal.asset_id, AVAILABLE),
                  actor=actor, reason=reason)
    withdrawal = _transition(withdrawal, Withdrawal.Status.REJECTED, actor=actor, reason=reason)
    _record(actions.WITHDRAWAL_REJECT, withdrawal, before, actor=actor, audit=audit)
    return withdrawal


@transaction.atomic
@exact
def withdrawal_complete(*, withdrawal: Withdrawal, actor, txid: str, reason: str,
                        audit: dict | None = None) -> Withdrawal:
    """Record that the funds were sent (external ``txid``): WITHDRAWALS_PENDING -> EXTERNAL."""
    txid = _require(txid, "INVALID_TXID", "txid", "Completing a withdrawal needs the external transaction id.")
    reason = _require(reason, "REASON_REQUIRED", "reason", "Completing a withdrawal needs a reason.")
    withdrawal = _locked(withdrawal, expected=Withdrawal.Status.APPROVED, action="completed", actor=actor)
    before = _state(withdrawal)
    posting = Posting(accounts=[(None, withdrawal.asset_id, PENDING), (None, withdrawal.asset_id, EXTERNAL)])
    posting.transfer(
        kind=TransactionKind.WITHDRAWAL_COMPLETE,
        reference=withdrawal.hold_reference,
        memo=f"{reason} (txid {txid})",
        actor_id=actor.pk,
        legs=[
            Leg((None, withdrawal.asset_id, PENDING), -withdrawal.amount),
            Leg((None, withdrawal.asset_id, EXTERNAL), withdrawal.amount),
        ],
    )
    posting.write()
    withdrawal.txid = txid
    withdrawal.completed_at = timezone.now()
    withdrawal.status = Withdrawal.Status.COMPLETED
    withdrawal.reason = reason
    withdrawal.save(update_fields=["status", "txid", "completed_at", "reason"])
    _record(actions.WITHDRAWAL_COMPLETE, withdrawal, before, actor=actor, audit=audit)
    return withdrawal


def _transition(withdrawal: Withdrawal, status: str, *, actor, reason: str) -> Withdrawal:
    withdrawal.status = status
    withdrawal.reviewed_by = actor
    withdrawal.reviewed_at = timezone.now()
    withdrawal.reason = reason
    withdrawal.save(update_fields=["status", "reviewed_by", "reviewed_at", "reason"])
    return withdrawal


__all__ = ["withdrawal_approve", "withdrawal_complete", "withdrawal_reject", "withdrawal_request"]
