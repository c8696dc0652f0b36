"""Staff money actions under the four-eyes rule: the back office's only door to moving money.

Crediting a deposit, adjusting a balance and approving a withdrawal go
through ``money_action_request``. The staff member needs the action's
permission (``PERMISSIONS``) and a reason, and may not act on their own
account. When the amount (its absolute value) is at most the asset's
threshold (``MONEY_FOUR_EYES_THRESHOLDS``, else
``MONEY_FOUR_EYES_THRESHOLD_DEFAULT``), the action runs at once, in the same
transaction as its ``MoneyAction`` row. Above it, the row waits (PENDING,
audited ``MONEY_ACTION_REQUEST``) until a second staff member with the same
permission, neither the requester nor the account's owner, approves it
(``money_action_approve``: the action runs then, audited
``MONEY_ACTION_APPROVE`` besides the action's own row) or rejects it
(``money_action_reject``, ``MONEY_ACTION_REJECT``). The database refuses a
row that breaks these rules (``MoneyAction``'s check constraints).

Rejecting and completing a withdrawal move no money to anyone but its
owner or out of the operator's pending account, so they need no second
person; they have their own permissions (``wallet.approve_withdrawal``
covers approve and reject, ``wallet.complete_withdrawal`` completing).
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from exchange.audit import actions
from exchange.audit.services import audit_log_record, audit_origin
from exchange.core.errors import ApplicationError
from wallet.ledger import validate_amount
from wallet.models import Deposit, MoneyAction, Withdrawal
from wallet.services.adjustments import balance_adjust
from wallet.services.deposits import deposit_credit
from wallet.services.errors import own_account
from wallet.services.withdrawals import withdrawal_approve, withdrawal_complete, withdrawal_reject

Kind = MoneyAction.Kind
Status = MoneyAction.Status

PERMISSIONS = {
    Kind.DEPOSIT_CREDIT: "wallet.add_deposit",
    Kind.BALANCE_ADJUST: "wallet.add_adjustment",
    Kind.WITHDRAWAL_APPROVE: "wallet.approve_withdrawal",
}


def four_eyes_threshold(asset) -> Decimal:
    """The largest amount of ``asset`` one staff member may move alone."""
    return settings.MONEY_FOUR_EYES_THRESHOLDS.get(asset.code, settings.MONEY_FOUR_EYES_THRESHOLD_DEFAULT)


def _require_permission(actor, permission: str) -> None:
    if actor is None or not (actor.is_active and actor.is_staff and actor.has_perm(permission)):
        raise ApplicationError("PERMISSION_DENIED", "You may not do this.", status_code=403)


def _require_reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise ApplicationError("REASON_REQUIRED", "Every money action needs a reason.", field="reason")
    return reason


def _require_not_own(actor, user_id: int) -> None:
    if actor.pk == user_id:
        raise own_account()


def _state(action: MoneyAction) -> dict:
    return {"kind": action.kind, "status": action.status, "user_id": action.user_id, "asset": action.asset.code,
            "amount": action.amount, "txid": action.txid, "withdrawal_id": action.withdrawal_id,
            "reason": action.reason, "requested_by": action.requested_by_id, "decided_by": action.decided_by_id,
            "decision_reason": action.decision_reason}


@transaction.atomic
def money_action_request(*, kind: str, actor, reason: str, user=None, asset=None, amount: Decimal | None = None,
                         txid: str = "", withdrawal: Withdrawal | None = None,
                         audit: dict | None = None) -> MoneyAction:
    """Ask for a money action: returns its row, EXECUTED (done now) or PENDING (waits for a second person).

    A withdrawal approval takes ``withdrawal`` (its user, asset and amount);
    the others take ``user``, ``asset`` and ``amount`` (signed for an
    adjustment) and, for a deposit, its external ``txid``. Errors:
    PERMISSION_DENIED, OWN_ACCOUNT (403); REASON_REQUIRED, the amount's codes
    (400); DEPOSIT_ALREADY_CREDITED, APPROVAL_PENDING, INVALID_WITHDRAWAL_STATE
    (409); and whatever the action itself refuses (INSUFFICIENT_FUNDS...),
    in which case nothing is written.
    """
    kind = Kind(kind)
    _require_permission(actor, PERMISSIONS[kind])
    reason = _require_reason(reason)
    if kind == Kind.WITHDRAWAL_APPROVE:
        withdrawal = Withdrawal.objects.select_for_update(of=("self",)).select_related("asset", "user").get(
            pk=withdrawal.pk)
        if withdrawal.status != Withdrawal.Status.REQUESTED:
            raise ApplicationError("INVALID_WITHDRAWAL_STATE", f"Withdrawal {withdrawal.pk} is {withdrawal.status}; "
                                   "only a REQUESTED withdrawal can be approved.", status_code=409)
        pending = MoneyAction.objects.filter(withdrawal=withdrawal, status=Status.PENDING).first()
        if pending is not None:
            raise ApplicationError("APPROVAL_PENDING", f"Withdrawal {withdrawal.pk} already waits for a second "
                                   f"approval (request {pending.pk}).", status_code=409)
        user, asset, amount, txid = withdrawal.user, withdrawal.asset, withdrawal.amount, ""
    else:
        amount = validate_amount(asset=asset, amount=amount, signed=kind == Kind.BALANCE_ADJUST)
        txid = (txid or "").strip()
        if kind == Kind.DEPOSIT_CREDIT:
            _require_new_txid(asset, txid)
    _require_not_own(actor, user.pk)
    four_eyes = abs(amount) > four_eyes_threshold(asset)
    action = MoneyAction.objects.create(
        kind=kind, status=Status.PENDING if four_eyes else Status.EXECUTED, user=user, asset=asset, amount=amount,
        txid=txid, withdrawal=withdrawal, reason=reason, four_eyes=four_eyes, requested_by=actor)
    if four_eyes:
        audit_log_record(action=actions.MONEY_ACTION_REQUEST, object_type="wallet.moneyaction", object_id=action.pk,
                         subject_user=user, after=_state(action), **audit_origin(audit, staff=actor))
    else:
        _execute(action, executor=actor, audit=audit)
    return action


def _require_new_txid(asset, txid: str) -> None:
    if not txid:
        raise ApplicationError("INVALID_TXID", "A deposit needs its external transaction id.", field="txid")
    credited = Deposit.objects.filter(asset=asset, txid=txid).first()
    if credited is not None:
        raise ApplicationError("DEPOSIT_ALREADY_CREDITED", f"{asset.code} {txid} was already credited "
                               f"(deposit {credited.pk}); nothing changed.", field="txid", status_code=409)
    waiting = MoneyAction.objects.filter(kind=Kind.DEPOSIT_CREDIT, asset=asset, txid=txid,
                                         status=Status.PENDING).first()
    if waiting is not None:
        raise ApplicationError("APPROVAL_PENDING", f"A credit of {asset.code} {txid} already waits for a second "
                               f"approval (request {waiting.pk}).", field="txid", status_code=409)


def _execute(action: MoneyAction, *, executor, audit: dict | None) -> None:
    """Run the action in the caller's transaction; ``executor`` is who let it happen (the approver above
    the threshold), recorded as the journal's operator, with the request in the memo."""
    memo = action.reason
    if action.four_eyes:
        memo = f"{action.reason} [four eyes: request {action.pk} by {action.requested_by.get_username()}, " \
               f"approved by {executor.get_username()}]"
    if action.kind == Kind.DEPOSIT_CREDIT:
        deposit, _ = deposit_credit(user=action.user, asset=action.asset, amount=action.amount, txid=action.txid,
                                    source=Deposit.Source.OPERATOR, actor=executor, memo=memo, audit=audit)
        action.deposit = deposit
        action.journal_transaction_id = _journal_id(f"deposit:{deposit.pk}", "DEPOSIT")
    elif action.kind == Kind.BALANCE_ADJUST:
        action.journal_transaction = balance_adjust(user=action.user, asset=action.asset, amount=action.amount,
                                                    actor=executor, reason=memo, audit=audit)
    else:
        withdrawal_approve(withdrawal=action.withdrawal, actor=executor, reason=memo, audit=audit)
        action.journal_transaction_id = _journal_id(action.withdrawal.hold_reference, "WITHDRAWAL_APPROVE")
    action.save(update_fields=["deposit", "journal_transaction"])


def _journal_id(reference: str, kind: str) -> int:
    from wallet.models import LedgerTransaction

    return LedgerTransaction.objects.filter(kind=kind, reference=reference).values_list("id", flat=True).get()


def _decidable(action: MoneyAction, actor) -> MoneyAction:
    locked = MoneyAction.objects.select_for_update(of=("self",)).select_related(
        "asset", "user", "requested_by", "withdrawal").get(pk=action.pk)
    if locked.status != Status.PENDING:
        raise ApplicationError("MONEY_ACTION_DECIDED", f"Request {locked.pk} is {locked.status}, no longer pending.",
                               status_code=409)
    _require_permission(actor, PERMISSIONS[Kind(locked.kind)])
    if actor.pk == locked.requested_by_id:
        raise ApplicationError("FOUR_EYES_SAME_PERSON", "A second staff member must decide: you asked for this "
                               "one yourself.", status_code=403)
    _require_not_own(actor, locked.user_id)
    return locked


def _decide(action: MoneyAction, status: str, *, actor, reason: str) -> dict:
    before = _state(action)
    action.status = status
    action.decided_by = actor
    action.decided_at = timezone.now()
    action.decision_reason = reason
    action.save(update_fields=["status", "decided_by", "decided_at", "decision_reason"])
    return before


@transaction.atomic
def money_action_approve(*, action: MoneyAction, actor, reason: str, audit: dict | None = None) -> MoneyAction:
    """The second staff member approves a PENDING request: the action runs now (all or nothing)."""
    reason = _require_reason(reason)
    action = _decidable(action, actor)
    before = _decide(action, Status.EXECUTED, actor=actor, reason=reason)
    _execute(action, executor=actor, audit=audit)
    audit_log_record(action=actions.MONEY_ACTION_APPROVE, object_type="wallet.moneyaction", object_id=action.pk,
                     subject_user=action.user_id, before=before, after=_state(action),
                     **audit_origin(audit, staff=actor))
    return action


@transaction.atomic
def money_action_reject(*, action: MoneyAction, actor, reason: str, audit: dict | None = None) -> MoneyAction:
    """The second staff member refuses a PENDING request; no money moves."""
    reason = _require_reason(reason)
    action = _decidable(action, actor)
    before = _decide(action, Status.REJECTED, actor=actor, reason=reason)
    audit_log_record(action=actions.MONEY_ACTION_REJECT, object_type="wallet.moneyaction", object_id=action.pk,
                     subject_user=action.user_id, before=before, after=_state(action),
                     **audit_origin(audit, staff=actor))
    return action


@transaction.atomic
def withdrawal_reject_by_staff(*, withdrawal: Withdrawal, actor, reason: str,
                               audit: dict | None = None) -> Withdrawal:
    """Reject a REQUESTED withdrawal (funds back to its owner); a pending approval of it is CANCELED."""
    _require_permission(actor, "wallet.approve_withdrawal")
    _require_not_own(actor, withdrawal.user_id)
    withdrawal = withdrawal_reject(withdrawal=withdrawal, actor=actor, reason=reason, audit=audit)
    for pending in MoneyAction.objects.select_for_update().filter(withdrawal=withdrawal, status=Status.PENDING):
        before = _decide(pending, Status.CANCELED, actor=actor, reason=f"withdrawal rejected: {reason}")
        audit_log_record(action=actions.MONEY_ACTION_REJECT, object_type="wallet.moneyaction", object_id=pending.pk,
                         subject_user=pending.user_id, before=before, after=_state(pending),
                         **audit_origin(audit, staff=actor))
    return withdrawal


@transaction.atomic
def withdrawal_complete_by_staff(*, withdrawal: Withdrawal, actor, txid: str, reason: str,
                                 audit: dict | None = None) -> Withdrawal:
    """Record that an APPROVED withdrawal was sent (``wallet.complete_withdrawal``)."""
    _require_permission(actor, "wallet.complete_withdrawal")
    _require_not_own(actor, withdrawal.user_id)
    return withdrawal_complete(withdrawal=withdrawal, actor=actor, txid=txid, reason=reason, audit=audit)


__all__ = [
    "PERMISSIONS",
    "four_eyes_threshold",
    "money_action_approve",
    "money_action_reject",
    "money_action_request",
    "withdrawal_complete_by_staff",
    "withdrawal_reject_by_staff",
]
