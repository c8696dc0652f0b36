"""Deposits: money from outside credited to a user, once per (asset, external txid)."""

from __future__ import annotations

from decimal import Decimal

from django.db import connection, transaction

from exchange.audit import actions
from exchange.audit.services import audit_log_record, audit_origin
from exchange.core.errors import ApplicationError
from wallet.ledger import AVAILABLE, Leg, Posting, exact, validate_amount
from wallet.models import Account, AccountKind, Deposit, TransactionKind
from wallet.services.errors import own_account

EXTERNAL = AccountKind.EXTERNAL.value

_INSERT_DEPOSIT = """
    INSERT INTO wallet_deposit (user_id, asset_id, amount, source, txid, memo, created_by_id)
    VALUES (%s, %s, %s, %s, %s, %s, %s)
    ON CONFLICT (asset_id, txid) DO NOTHING
    RETURNING id
"""


@transaction.atomic
@exact
def deposit_credit(
    *,
    user,
    asset,
    amount: Decimal,
    txid: str,
    source: Deposit.Source | str = Deposit.Source.OPERATOR,
    actor=None,
    memo: str = "",
    audit: dict | None = None,
) -> tuple[Deposit, bool]:
    """Credit ``amount`` of ``asset`` from EXTERNAL to the user's AVAILABLE balance.

    Idempotent on (asset, txid): the same txid credits once; a repeat with the
    same user and amount returns the first deposit and ``created=False``, a
    repeat that disagrees is a ``DEPOSIT_CONFLICT``. Operator deposits need
    the operator (``actor``) and a reason (``memo``); both are recorded on
    the journal transaction; nobody credits their own account (403
    OWN_ACCOUNT). In the back office, credits go through
    ``wallet.services.four_eyes``. A credit writes a DEPOSIT_CREDIT audit row
    (``audit``: the request's ``audit_context``; without one the operator,
    or the running process, is the actor); a repeat writes none.
    """
    amount = validate_amount(asset=asset, amount=amount)
    txid = (txid or "").strip()
    if not txid or len(txid) > Deposit._meta.get_field("txid").max_length:
        raise ApplicationError("INVALID_TXID", "A deposit needs its external transaction id (1-128 characters).", field="txid")
    memo = memo.strip()
    if source == Deposit.Source.OPERATOR and (actor is None or not memo):
        raise ApplicationError("REASON_REQUIRED", "An operator deposit needs the operator and a reason.", field="memo")
    if actor is not None and actor.pk == user.pk:
        raise own_account()
    with connection.cursor() as cursor:
        cursor.execute(
            _INSERT_DEPOSIT,
            [user.pk, asset.pk, amount, str(source), txid, memo, actor.pk if actor else None],
        )
        row = cursor.fetchone()
    if row is None:
        existing = Deposit.objects.get(asset=asset, txid=txid)
        if existing.user_id != user.pk or existing.amount != amount:
            raise ApplicationError(
                "DEPOSIT_CONFLICT",
                f"{asset.code} transaction {txid} was already credited with other details.",
                field="txid",
                status_code=409,
            )
        return existing, False
    deposit = Deposit.objects.get(pk=row[0])
    posting = Posting(accounts=[(None, asset.pk, EXTERNAL), (user.pk, asset.pk, AVAILABLE)])
    posting.transfer(
        kind=TransactionKind.DEPOSIT,
        reference=deposit.reference,
        memo=memo or f"{source} {txid}",
        actor_id=actor.pk if actor else None,
        legs=[Leg((None, asset.pk, EXTERNAL), -amount), Leg((user.pk, asset.pk, AVAILABLE), amount)],
    )
    posting.write()
    available = Account.objects.get(user=user, asset=asset, kind=AVAILABLE).balance
    audit_log_record(
        action=actions.DEPOSIT_CREDIT, object_type="wallet.deposit", object_id=deposit.pk, subject_user=user,
        before={"available": available - amount},
        after={"available": available, "asset": asset.code, "amount": amount, "txid": txid, "source": str(source),
               "memo": memo},
        **audit_origin(audit, staff=actor))
    return deposit, True
