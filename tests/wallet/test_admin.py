"""The back office: ledger rows read-only, money moved only by forms and actions that call
services with a reason, recorded with the operator on the journal."""

from decimal import Decimal as D

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

from exchange.roles import COMPLIANCE, OPERATORS
from tests.wallet.conftest import balances
from wallet.models import Account, Deposit, LedgerTransaction, Withdrawal
from wallet.services import withdrawal_approve, withdrawal_request

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def one_staff_member_suffices(settings):
    """These tests are about the forms and actions; the amounts stay under the four-eyes threshold
    (tests/backoffice/test_four_eyes.py is about the threshold)."""
    settings.MONEY_FOUR_EYES_THRESHOLD_DEFAULT = D("1000")


def test_operator_credits_a_deposit_through_the_form(client, staff, alice, btc):
    """The add form calls deposit_credit with the operator and reason; the same txid again credits nothing."""
    operator = staff(OPERATORS)
    form = {"user": alice.pk, "asset": btc.pk, "amount": "1.25", "txid": "wire-1", "reason": "bank wire 1"}

    response = client.post("/admin/wallet/deposit/add/", form)

    assert response.status_code == 302
    assert balances(alice, btc) == (D("1.25"), D("0"))
    txn = LedgerTransaction.objects.get(kind="DEPOSIT")
    assert (txn.actor, txn.memo) == (operator, "bank wire 1")
    again = client.post("/admin/wallet/deposit/add/", form, follow=True)
    assert b"already credited" in again.content and Deposit.objects.count() == 1


def test_deposit_form_errors_move_nothing(client, staff, alice, btc):
    """A missing reason or an amount finer than the asset's unit is shown on the form; no deposit is made."""
    staff(OPERATORS)
    no_reason = client.post("/admin/wallet/deposit/add/",
                            {"user": alice.pk, "asset": btc.pk, "amount": "1", "txid": "x", "reason": ""})
    too_fine = client.post("/admin/wallet/deposit/add/",
                           {"user": alice.pk, "asset": btc.pk, "amount": "0.000000001", "txid": "x", "reason": "r"})

    assert no_reason.status_code == 200 and b"This field is required" in no_reason.content
    assert too_fine.status_code == 200 and b"at most 8 decimal places" in too_fine.content
    assert not Deposit.objects.exists()


def test_adjustment_form_records_actor_and_reason_and_cannot_overdraw(client, staff, alice, btc, fund):
    """Service errors (insufficient funds) come back as form errors; a valid adjustment lands with actor and reason."""
    fund(alice, btc, "1")
    operator = staff(OPERATORS)

    overdraw = client.post("/admin/wallet/adjustment/add/",
                           {"user": alice.pk, "asset": btc.pk, "amount": "-2", "reason": "chargeback"})
    assert overdraw.status_code == 200 and b"Insufficient BTC" in overdraw.content
    response = client.post("/admin/wallet/adjustment/add/",
                           {"user": alice.pk, "asset": btc.pk, "amount": "-0.1", "reason": "chargeback 77"})

    assert response.status_code == 302
    assert balances(alice, btc) == (D("0.9"), D("0"))
    adjustment = LedgerTransaction.objects.get(kind="ADJUSTMENT")
    assert (adjustment.actor, adjustment.memo) == (operator, "chargeback 77")
    assert client.get("/admin/wallet/adjustment/").status_code == 200


def test_withdrawal_queue_shows_requested_and_approves_with_a_reason(client, staff, alice, btc, fund):
    """The action first asks for a reason (intermediate form), then calls the service."""
    fund(alice, btc, "2")
    first = withdrawal_request(user=alice, asset=btc, amount=D("0.5"), address="bc1qfirst")
    operator = staff(OPERATORS)
    done = withdrawal_approve(
        withdrawal=withdrawal_request(user=alice, asset=btc, amount=D("0.5"), address="bc1qdone"),
        actor=operator, reason="earlier",
    )

    queue = client.get("/admin/wallet/withdrawal/")
    assert b"bc1qfirst" in queue.content and b"bc1qdone" not in queue.content
    assert b"bc1qdone" in client.get("/admin/wallet/withdrawal/", {"status": "all"}).content

    ask = client.post("/admin/wallet/withdrawal/", {"action": "approve_selected", ACTION_CHECKBOX_NAME: [first.pk]})
    assert ask.status_code == 200 and b"Approve 1 withdrawal" in ask.content
    assert Withdrawal.objects.get(pk=first.pk).status == "REQUESTED"

    client.post("/admin/wallet/withdrawal/", {"action": "approve_selected", ACTION_CHECKBOX_NAME: [first.pk],
                                              "apply": "1", "reason": "KYC level 2"})

    first.refresh_from_db()
    assert (first.status, first.reviewed_by, first.reason) == ("APPROVED", operator, "KYC level 2")
    txn = LedgerTransaction.objects.get(kind="WITHDRAWAL_APPROVE", reference=f"withdrawal:{first.pk}")
    assert (txn.actor, txn.memo) == (operator, "KYC level 2")

    client.post("/admin/wallet/withdrawal/?status=APPROVED",
                {"action": "complete_selected", ACTION_CHECKBOX_NAME: [done.pk], "apply": "1",
                 "reason": "sent", "txid": "0xout"})
    done.refresh_from_db()
    assert (done.status, done.txid) == ("COMPLETED", "0xout")


def test_rejecting_without_a_reason_asks_again(client, staff, alice, btc, fund):
    """The intermediate form refuses an empty reason and changes nothing; with one, the funds are released."""
    fund(alice, btc, "1")
    withdrawal = withdrawal_request(user=alice, asset=btc, amount=D("1"), address="bc1q")
    staff(OPERATORS)

    response = client.post("/admin/wallet/withdrawal/", {"action": "reject_selected", ACTION_CHECKBOX_NAME:
                                                         [withdrawal.pk], "apply": "1", "reason": ""})

    assert response.status_code == 200 and b"This field is required" in response.content
    assert Withdrawal.objects.get(pk=withdrawal.pk).status == "REQUESTED"
    client.post("/admin/wallet/withdrawal/", {"action": "reject_selected", ACTION_CHECKBOX_NAME: [withdrawal.pk],
                                              "apply": "1", "reason": "sanctioned address"})
    assert Withdrawal.objects.get(pk=withdrawal.pk).status == "REJECTED"
    assert balances(alice, btc) == (D("1"), D("0"))


def test_ledger_rows_are_read_only_for_everyone(client, staff, alice, btc, fund):
    """Even an operator can only view accounts, journal and holds: posting a change does nothing, add is 403."""
    fund(alice, btc, "1")
    staff(OPERATORS)
    account = Account.objects.get(user=alice, kind="AVAILABLE")

    assert client.get(f"/admin/wallet/account/{account.pk}/change/").status_code == 200
    client.post(f"/admin/wallet/account/{account.pk}/change/", {"balance": "1000"})
    assert Account.objects.get(pk=account.pk).balance == D("1")
    for model in ("account", "ledgertransaction", "ledgerentry", "hold", "withdrawal"):
        assert client.get(f"/admin/wallet/{model}/add/").status_code == 403, model
    for model in ("account", "ledgertransaction", "ledgerentry", "hold", "withdrawal", "deposit", "adjustment",
                  "feetier", "feeoverride"):
        assert client.get(f"/admin/wallet/{model}/").status_code == 200, model
    txn = LedgerTransaction.objects.get()
    assert b"ledger entries" in client.get(f"/admin/wallet/ledgertransaction/{txn.pk}/change/").content.lower()


def test_compliance_can_look_but_not_move_money(client, staff, alice, btc, fund):
    """Compliance sees the wallet pages but cannot credit, adjust or review withdrawals."""
    fund(alice, btc, "1")
    withdrawal = withdrawal_request(user=alice, asset=btc, amount=D("1"), address="bc1q")
    staff(COMPLIANCE)

    assert client.get("/admin/wallet/ledgertransaction/").status_code == 200
    assert client.get("/admin/wallet/deposit/add/").status_code == 403
    assert client.get("/admin/wallet/adjustment/add/").status_code == 403
    client.post("/admin/wallet/withdrawal/", {"action": "approve_selected", ACTION_CHECKBOX_NAME: [withdrawal.pk],
                                              "apply": "1", "reason": "x"})
    assert Withdrawal.objects.get(pk=withdrawal.pk).status == "REQUESTED"
