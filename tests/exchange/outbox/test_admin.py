"""Back office: the outbox backlog is read-only; operators requeue FAILED events."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import transaction

from exchange.outbox.models import OutboxEvent, Topic
from exchange.outbox.services import Event, outbox_emit_many
from exchange.roles import OPERATORS, SUPPORT

pytestmark = pytest.mark.django_db

URL = "/admin/exchange/outboxevent/"


@pytest.fixture
def failed_and_published():
    with transaction.atomic():
        outbox_emit_many([Event(Topic.ORDERS, "BTC-USDT", "order.updated", {"i": i}) for i in range(3)])
    first, second, third = OutboxEvent.objects.order_by("id")
    OutboxEvent.objects.filter(pk__in=[first.pk, second.pk]).update(status="FAILED", attempts=12,
                                                                      last_error="kafka: down")
    OutboxEvent.objects.filter(pk=third.pk).update(status="PUBLISHED")
    return first, second, third


def test_operator_sees_the_backlog_filtered_and_searched(client, staff, failed_and_published):
    staff(OPERATORS)
    failed = client.get(URL, {"status__exact": "FAILED", "topic__exact": "order.events"})
    by_key = client.get(URL, {"q": "BTC-USDT"})
    by_id = client.get(URL, {"q": str(failed_and_published[2].event_id)})

    assert failed.status_code == by_key.status_code == by_id.status_code == 200
    assert failed.context["cl"].result_count == 2
    assert by_key.context["cl"].result_count == 3
    assert [e.pk for e in by_id.context["cl"].result_list] == [failed_and_published[2].pk]
    detail = client.get(f"{URL}{failed_and_published[0].pk}/change/")
    assert detail.status_code == 200 and b"kafka: down" in detail.content
    assert client.post(f"{URL}{failed_and_published[0].pk}/change/", {"status": "PUBLISHED"}).status_code == 403
    assert client.get(f"{URL}add/").status_code == 403


def test_operator_requeues_failed_events_only(client, staff, failed_and_published):
    staff(OPERATORS)
    first, second, third = failed_and_published
    assert b'value="requeue"' in client.get(URL).content

    response = client.post(URL, {"action": "requeue", ACTION_CHECKBOX_NAME: [first.pk, third.pk]}, follow=True)

    assert response.status_code == 200
    assert b"Requeued 1 event" in response.content and b"were not FAILED" in response.content
    statuses = dict(OutboxEvent.objects.values_list("pk", "status"))
    assert statuses == {first.pk: "PENDING", second.pk: "FAILED", third.pk: "PUBLISHED"}
    assert OutboxEvent.objects.get(pk=first.pk).attempts == 0


def test_support_can_look_but_not_requeue(client, staff, failed_and_published):
    staff(SUPPORT)
    first = failed_and_published[0]
    listing = client.get(URL)
    response = client.post(URL, {"action": "requeue", ACTION_CHECKBOX_NAME: [first.pk]})

    assert listing.status_code == 200 and b'value="requeue"' not in listing.content
    assert response.status_code in (200, 302)
    assert OutboxEvent.objects.get(pk=first.pk).status == "FAILED"


def test_editing_a_market_in_the_back_office_writes_market_updated(client, staff):
    """Changed terms are published with the market's terms after the change; a save that changes nothing is no event."""
    from decimal import Decimal

    from tests.factories import MarketFactory

    operator = staff(OPERATORS)
    market = MarketFactory()
    form = {"min_quantity": market.min_quantity, "max_quantity": market.max_quantity,
            "min_notional": market.min_notional, "maker_fee_rate": market.maker_fee_rate,
            "taker_fee_rate": "0.0025", "price_band": market.price_band, "stp_default": market.stp_default}

    response = client.post(f"/admin/exchange/market/{market.pk}/change/", form)
    again = client.post(f"/admin/exchange/market/{market.pk}/change/", form)

    assert response.status_code == again.status_code == 302
    [event] = OutboxEvent.objects.filter(topic=Topic.MARKETS)
    assert (event.event_type, event.key) == ("market.updated", market.symbol)
    assert event.payload["changed_fields"] == ["taker_fee_rate"] and event.payload["changed_by"] == operator.pk
    assert event.payload["taker_fee_rate"] == "0.0025" and Decimal(event.payload["tick_size"]) == market.tick_size
