"""Back office: the outbox is read-only and shows each event's status; operators requeue FAILED events."""

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import transaction

from exchange.outbox.bus import stream_name
from exchange.outbox.models import OutboxEvent, Topic
from exchange.outbox.relay import outbox_relay
from exchange.outbox.services import Event, outbox_emit_many
from exchange.roles import COMPLIANCE, OPERATORS

pytestmark = pytest.mark.django_db

URL = "/admin/exchange/outboxevent/"


def emit(*labels: str) -> list[OutboxEvent]:
    with transaction.atomic():
        return outbox_emit_many([Event(Topic.ORDERS, "BTC-USDT", "order.updated", {"label": label})
                                 for label in labels])


@pytest.fixture
def failed_waiting_published(bus, redis_app, settings):
    """Three events of one key: one published, then one the bus refused for good
    (FAILED, the head of its key) and one waiting behind it."""
    settings.OUTBOX_MAX_ATTEMPTS = 1
    [published] = emit("published")
    outbox_relay(bus=bus)
    redis_app.delete(stream_name(Topic.ORDERS))
    redis_app.set(stream_name(Topic.ORDERS), "not a stream")  # Redis refuses the next XADDs (WRONGTYPE)
    failed, waiting = emit("failed", "waiting")
    outbox_relay(bus=bus)
    redis_app.delete(stream_name(Topic.ORDERS))
    return failed, waiting, published


def statuses(response) -> dict:
    return {event.pk: event.status for event in response.context["cl"].result_list}


@pytest.mark.django_db(transaction=True)
def test_operator_sees_each_event_status_filtered_and_searched(client, staff, failed_waiting_published):
    """Status is derived (cursor or delivery state) and filterable; search by key or event id."""
    staff(OPERATORS)
    failed, waiting, published = failed_waiting_published
    [pending] = emit("pending")
    everything = client.get(URL)
    only_failed = client.get(URL, {"status": "FAILED", "topic__exact": "order.events"})
    only_pending = client.get(URL, {"status": "PENDING"})
    only_published = client.get(URL, {"status": "PUBLISHED"})
    by_key = client.get(URL, {"q": "BTC-USDT"})
    by_id = client.get(URL, {"q": str(published.event_id)})

    assert statuses(everything) == {failed.pk: "FAILED", waiting.pk: "WAITING", published.pk: "PUBLISHED",
                                    pending.pk: "PENDING"}
    assert list(statuses(only_failed)) == [failed.pk] and list(statuses(only_pending)) == [pending.pk]
    assert list(statuses(only_published)) == [published.pk]
    assert by_key.context["cl"].result_count == 4
    assert [e.pk for e in by_id.context["cl"].result_list] == [published.pk]
    detail = client.get(f"{URL}{failed.pk}/change/")
    assert detail.status_code == 200 and b"WRONGTYPE" in detail.content
    assert client.post(f"{URL}{failed.pk}/change/", {"delivery": ""}).status_code == 403
    assert client.get(f"{URL}add/").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_operator_requeues_failed_events_only_and_the_relay_sends_them_in_order(client, staff, bus, redis_app,
                                                                                failed_waiting_published):
    staff(OPERATORS)
    failed, waiting, published = failed_waiting_published
    assert b'value="requeue"' in client.get(URL).content

    response = client.post(URL, {"action": "requeue", ACTION_CHECKBOX_NAME: [failed.pk, published.pk]}, follow=True)

    assert response.status_code == 200
    assert b"Requeued 1 event" in response.content and b"were not FAILED" in response.content
    deliveries = dict(OutboxEvent.objects.values_list("pk", "delivery"))
    assert deliveries == {failed.pk: "RETRY", waiting.pk: "WAITING", published.pk: None}
    assert OutboxEvent.objects.get(pk=failed.pk).attempts == 0
    assert outbox_relay(bus=bus).published == 2
    assert [fields[b"event_id"].decode() for _, fields in redis_app.xrange(stream_name(Topic.ORDERS))] == [
        str(failed.event_id), str(waiting.event_id)]


@pytest.mark.django_db(transaction=True)
def test_compliance_can_look_but_not_requeue(client, staff, failed_waiting_published):
    staff(COMPLIANCE)
    failed = failed_waiting_published[0]
    listing = client.get(URL)
    response = client.post(URL, {"action": "requeue", ACTION_CHECKBOX_NAME: [failed.pk]})

    assert listing.status_code == 200 and b'value="requeue"' not in listing.content
    assert response.status_code in (200, 302)
    assert OutboxEvent.objects.get(pk=failed.pk).delivery == "FAILED"


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
