"""Four eyes on staff money: above an asset's threshold a credit, an adjustment or a withdrawal approval
waits for a second, different staff member; nobody acts on their own account; approving and completing a
withdrawal are separate permissions; every money action needs a reason, and each step is audited."""

from decimal import Decimal as D

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.models import Permission
from django.db import IntegrityError, connection, transaction

from exchange.audit.models import AuditLog
from tests.factories import UserFactory, login_staff
from tests.wallet.conftest import balances
from wallet.invariants import assert_ledger_sound
from wallet.models import Deposit, LedgerTransaction, MoneyAction, Withdrawal
from wallet.services import withdrawal_request
from wallet.services.four_eyes import (
    money_action_approve,
    money_action_reject,
    money_action_request,
    withdrawal_complete_by_staff,
    withdrawal_reject_by_staff,
)

pytestmark = pytest.mark.django_db
Kind = MoneyAction.Kind


def code_of(call) -> str:
    from exchange.core.errors import ApplicationError

    with pytest.raises(ApplicationError) as raised:
        call()
    return raised.value.code


def credit(actor, user, asset, amount, txid="wire-1", reason="bank wire 17"):
    return money_action_request(kind=Kind.DEPOSIT_CREDIT, actor=actor, user=user, asset=asset, amount=D(amount),
                                txid=txid, reason=reason)


def test_at_or_under_the_threshold_one_staff_member_suffices(threshold, olga, alice, btc):
    """An amount equal to the threshold runs at once, with the staff member on the journal."""
    action = credit(olga, alice, btc, "1")

    assert (action.status, action.four_eyes, action.decided_by) == ("EXECUTED", False, None)
    assert balances(alice, btc) == (D("1"), D("0"))
    journal = LedgerTransaction.objects.get(kind="DEPOSIT")
    assert (journal.actor, journal.memo, action.journal_transaction) == (olga, "bank wire 17", journal)


def test_above_the_threshold_a_credit_waits_for_a_second_staff_member(threshold, olga, oscar, alice, btc):
    """Nothing moves until someone else approves; then the deposit is credited once, in the approver's name,
    the journal memo naming both people, and each step has its audit row."""
    action = credit(olga, alice, btc, "1.5")

    assert (action.status, action.four_eyes) == ("PENDING", True)
    assert balances(alice, btc) == (D("0"), D("0")) and not Deposit.objects.exists()
    assert code_of(lambda: money_action_approve(action=action, actor=olga, reason="me again")) == \
        "FOUR_EYES_SAME_PERSON"

    approved = money_action_approve(action=action, actor=oscar, reason="wire seen on statement")

    assert (approved.status, approved.decided_by, approved.decision_reason) == \
        ("EXECUTED", oscar, "wire seen on statement")
    assert balances(alice, btc) == (D("1.5"), D("0"))
    journal = LedgerTransaction.objects.get(kind="DEPOSIT")
    assert journal.actor == oscar and "request" in journal.memo and "olga" in journal.memo
    assert code_of(lambda: money_action_approve(action=action, actor=oscar, reason="twice")) == \
        "MONEY_ACTION_DECIDED"
    rows = {row.action: row for row in AuditLog.objects.filter(object_type="wallet.moneyaction")}
    assert rows["MONEY_ACTION_REQUEST"].actor_staff_id == olga.pk
    assert rows["MONEY_ACTION_APPROVE"].actor_staff_id == oscar.pk
    assert rows["MONEY_ACTION_APPROVE"].before["status"] == "PENDING"
    assert AuditLog.objects.get(action="DEPOSIT_CREDIT").actor_staff_id == oscar.pk
    assert_ledger_sound()


def test_a_rejected_request_moves_nothing(threshold, olga, oscar, alice, btc, fund):
    """A negative adjustment above the threshold, rejected by the second staff member, leaves the balance."""
    fund(alice, btc, "5")
    action = money_action_request(kind=Kind.BALANCE_ADJUST, actor=olga, user=alice, asset=btc, amount=D("-3"),
                                  reason="chargeback 9")

    money_action_reject(action=action, actor=oscar, reason="not a chargeback, the bank confirmed")

    action.refresh_from_db()
    assert (action.status, action.decided_by) == ("REJECTED", oscar)
    assert balances(alice, btc) == (D("5"), D("0"))
    assert not LedgerTransaction.objects.filter(kind="ADJUSTMENT").exists()
    assert AuditLog.objects.get(action="MONEY_ACTION_REJECT").actor_staff_id == oscar.pk


def test_the_threshold_is_per_asset(settings, olga, alice, btc, usdt):
    """MONEY_FOUR_EYES_THRESHOLDS names assets; the others use the default."""
    settings.MONEY_FOUR_EYES_THRESHOLDS = {"USDT": D("10000")}
    settings.MONEY_FOUR_EYES_THRESHOLD_DEFAULT = D("0")

    assert credit(olga, alice, usdt, "9999", txid="u-1").status == "EXECUTED"
    assert credit(olga, alice, btc, "0.0001", txid="b-1").status == "PENDING"


def test_nobody_acts_on_their_own_account(threshold, olga, oscar, alice, btc):
    """A staff member cannot ask for money on their own account, nor approve a request about it; the
    ledger services refuse it too, and the database refuses such a row."""
    assert code_of(lambda: credit(olga, olga, btc, "0.5")) == "OWN_ACCOUNT"
    action = credit(olga, oscar, btc, "2")
    assert code_of(lambda: money_action_approve(action=action, actor=oscar, reason="mine")) == "OWN_ACCOUNT"

    from wallet.services import balance_adjust, deposit_credit

    assert code_of(lambda: balance_adjust(user=olga, asset=btc, amount=D("1"), actor=olga, reason="x")) == \
        "OWN_ACCOUNT"
    assert code_of(lambda: deposit_credit(user=olga, asset=btc, amount=D("1"), txid="t", actor=olga,
                                          memo="x")) == "OWN_ACCOUNT"
    with pytest.raises(IntegrityError), transaction.atomic():
        MoneyAction.objects.create(kind=Kind.DEPOSIT_CREDIT, status="PENDING", user=olga, asset=btc, amount=1,
                                   txid="raw", reason="x", four_eyes=True, requested_by=olga)


def test_the_database_refuses_a_second_approval_by_the_requester(threshold, olga, alice, btc):
    """Even written in SQL, an executed four-eyes row must name a decider other than the requester."""
    action = credit(olga, alice, btc, "2")

    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE wallet_moneyaction SET status = 'EXECUTED', decided_by_id = requested_by_id "
                       "WHERE id = %s", [action.pk])


def test_every_money_action_needs_a_reason(threshold, olga, oscar, alice, btc):
    assert code_of(lambda: credit(olga, alice, btc, "0.5", reason="  ")) == "REASON_REQUIRED"
    action = credit(olga, alice, btc, "2")
    assert code_of(lambda: money_action_approve(action=action, actor=oscar, reason="")) == "REASON_REQUIRED"
    assert code_of(lambda: money_action_reject(action=action, actor=oscar, reason="")) == "REASON_REQUIRED"


def test_a_txid_is_credited_once_even_through_two_requests(threshold, olga, alice, btc):
    """A second request for the same asset and txid is refused while the first waits, and once it is credited."""
    credit(olga, alice, btc, "2", txid="dup")
    assert code_of(lambda: credit(olga, alice, btc, "2", txid="dup")) == "APPROVAL_PENDING"
    credit(olga, alice, btc, "0.5", txid="small")
    assert code_of(lambda: credit(olga, alice, btc, "0.5", txid="small")) == "DEPOSIT_ALREADY_CREDITED"


def test_support_and_compliance_cannot_move_money(threshold, sam, carla, olga, alice, btc):
    for person in (sam, carla):
        assert code_of(lambda: credit(person, alice, btc, "0.1")) == "PERMISSION_DENIED"
    action = credit(olga, alice, btc, "2")
    for person in (sam, carla):
        assert code_of(lambda: money_action_approve(action=action, actor=person, reason="ok")) == \
            "PERMISSION_DENIED"


def test_a_withdrawal_approval_above_the_threshold_and_a_rejection_meanwhile(threshold, olga, oscar, alice, btc,
                                                                             fund):
    """The approval waits; another approval request of it is refused; rejecting the withdrawal releases
    the funds and cancels the waiting approval."""
    fund(alice, btc, "3")
    withdrawal = withdrawal_request(user=alice, asset=btc, amount=D("2"), address="bc1q")
    action = money_action_request(kind=Kind.WITHDRAWAL_APPROVE, withdrawal=withdrawal, actor=olga, reason="KYC ok")

    assert (action.status, Withdrawal.objects.get(pk=withdrawal.pk).status) == ("PENDING", "REQUESTED")
    assert code_of(lambda: money_action_request(kind=Kind.WITHDRAWAL_APPROVE, withdrawal=withdrawal, actor=oscar,
                                                reason="me too")) == "APPROVAL_PENDING"

    withdrawal_reject_by_staff(withdrawal=withdrawal, actor=olga, reason="address on a sanctions list")

    action.refresh_from_db()
    assert (action.status, action.decided_by) == ("CANCELED", olga)
    assert balances(alice, btc) == (D("3"), D("0"))


def test_approving_and_completing_are_separate_permissions(threshold, member, olga, oscar, alice, btc, fund):
    """Someone who may only complete cannot approve, and someone who may only approve cannot complete."""
    fund(alice, btc, "3")
    approver_only = UserFactory(username="approver", is_staff=True)
    approver_only.user_permissions.add(Permission.objects.get(codename="approve_withdrawal"))
    sender_only = UserFactory(username="sender", is_staff=True)
    sender_only.user_permissions.add(Permission.objects.get(codename="complete_withdrawal"))
    withdrawal = withdrawal_request(user=alice, asset=btc, amount=D("0.5"), address="bc1q")

    assert code_of(lambda: money_action_request(kind=Kind.WITHDRAWAL_APPROVE, withdrawal=withdrawal,
                                                actor=sender_only, reason="ok")) == "PERMISSION_DENIED"
    money_action_request(kind=Kind.WITHDRAWAL_APPROVE, withdrawal=withdrawal, actor=approver_only, reason="ok")
    assert code_of(lambda: withdrawal_complete_by_staff(withdrawal=withdrawal, actor=approver_only, txid="0x1",
                                                        reason="sent")) == "PERMISSION_DENIED"

    done = withdrawal_complete_by_staff(withdrawal=withdrawal, actor=sender_only, txid="0x1", reason="sent")

    assert done.status == "COMPLETED"


def test_in_the_back_office_one_operator_asks_and_another_approves(client, threshold, olga, oscar, alice, btc):
    """The deposit form above the threshold only queues the credit; the second operator's approve action
    under Money actions credits it; the first operator's own approve action is refused."""
    form = {"user": alice.pk, "asset": btc.pk, "amount": "2.5", "txid": "wire-77", "reason": "bank wire 77"}
    login_staff(client, olga)
    asked = client.post("/admin/wallet/deposit/add/", form, follow=True)
    assert b"waits for a second staff member" in asked.content
    action = MoneyAction.objects.get()
    client.post("/admin/wallet/moneyaction/", {"action": "approve_selected", ACTION_CHECKBOX_NAME: [action.pk],
                                               "confirm": "yes", "reason": "approving my own"})
    assert MoneyAction.objects.get().status == "PENDING"

    login_staff(client, oscar)
    listing = client.get("/admin/wallet/moneyaction/?status__exact=PENDING")
    assert b"bank wire 77" in listing.content
    client.post("/admin/wallet/moneyaction/", {"action": "approve_selected", ACTION_CHECKBOX_NAME: [action.pk],
                                               "confirm": "yes", "reason": "statement checked"})

    assert MoneyAction.objects.get().status == "EXECUTED"
    assert balances(alice, btc) == (D("2.5"), D("0"))


def test_operators_internal_reasons_never_reach_the_user(client, threshold, olga, alice, btc, fund, api_client):
    """The wallet API shows neither an adjustment's memo nor a withdrawal's review reason, and a live
    balance message carries only the balance fields."""
    from exchange.live.publish import balances_data

    fund(alice, btc, "2")
    money_action_request(kind=Kind.BALANCE_ADJUST, actor=olga, user=alice, asset=btc, amount=D("0.5"),
                         reason="SECRET-MEMO goodwill after ticket 5")
    withdrawal = withdrawal_request(user=alice, asset=btc, amount=D("1"), address="bc1q")
    withdrawal_reject_by_staff(withdrawal=withdrawal, actor=olga, reason="SECRET-REASON on a watch list")
    api_client.force_login(alice)

    seen = b"".join(api_client.get(path).content for path in
                    ("/api/v1/ledger", "/api/v1/withdrawals", "/api/v1/deposits", "/api/v1/balances"))

    assert b"SECRET" not in seen and b"memo" not in seen and b"reason" not in seen
    assert b"ADJUSTMENT" in seen and b"REJECTED" in seen
    [balance] = balances_data(user_ids=[alice.pk], assets={btc.pk: "BTC"})[alice.pk]
    assert set(balance) == {"asset", "available", "held", "total"}
