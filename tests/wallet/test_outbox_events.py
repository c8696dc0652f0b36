"""Every ledger movement writes balance.changed events, once per (user, asset)
whose balance changed, with the balances after it, in the same transaction."""

from decimal import Decimal as D

import pytest
from django.db import transaction

from exchange.outbox.models import OutboxEvent
from tests.wallet.conftest import balances
from wallet.services import HoldPlace, HoldRelease, balance_adjust, deposit_credit, funds_hold, ledger_apply

pytestmark = pytest.mark.django_db


def balance_events():
    return [(e.key, e.payload) for e in OutboxEvent.objects.filter(event_type="balance.changed").order_by("id")]


def test_deposit_hold_and_release_write_balance_events(alice, bob, btc, usdt, operator):
    deposit_credit(user=alice, asset=btc, amount=D("1.5"), txid="tx-1", source="CUSTODY")
    assert balance_events() == [
        (str(alice.pk), {"user_id": alice.pk, "asset": "BTC", "available": "1.5", "held": "0"})]

    OutboxEvent.objects.all().delete()
    funds_hold(user=alice, asset=btc, amount=D("0.5"), reference="order:1")
    assert balance_events() == [
        (str(alice.pk), {"user_id": alice.pk, "asset": "BTC", "available": "1", "held": "0.5"})]

    OutboxEvent.objects.all().delete()
    balance_adjust(user=bob, asset=usdt, amount=D("10"), actor=operator, reason="goodwill")
    ledger_apply([HoldRelease(reference="order:1", amount=None, close=True)])
    assert balance_events() == [
        (str(bob.pk), {"user_id": bob.pk, "asset": "USDT", "available": "10", "held": "0"}),
        (str(alice.pk), {"user_id": alice.pk, "asset": "BTC", "available": "1.5", "held": "0"}),
    ]


def test_one_ledger_call_writes_one_event_per_user_and_asset(alice, bob, btc, usdt):
    """Several movements of one user and asset in one ledger_apply: one event with
    the final balances; a movement that rolls back leaves no event."""
    for user in (alice, bob):
        deposit_credit(user=user, asset=usdt, amount=D("100"), txid=f"t-{user.pk}", source="CUSTODY")
    OutboxEvent.objects.all().delete()

    ledger_apply([HoldPlace(reference=f"order:{n}", user_id=user.pk, asset_id=usdt.pk, amount=D("10"))
                  for n, user in enumerate((alice, alice, bob))])

    assert balance_events() == [
        (str(alice.pk), {"user_id": alice.pk, "asset": "USDT", "available": "80", "held": "20"}),
        (str(bob.pk), {"user_id": bob.pk, "asset": "USDT", "available": "90", "held": "10"}),
    ]
    with pytest.raises(RuntimeError), transaction.atomic():
        funds_hold(user=alice, asset=usdt, amount=D("1"), reference="order:9")
        raise RuntimeError
    assert len(balance_events()) == 2 and balances(alice, usdt) == (D(80), D(20))
