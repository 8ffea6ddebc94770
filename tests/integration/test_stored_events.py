"""Stored trigger events: their shape, the model they name, and payloads 1.3.1 stored."""

from __future__ import annotations

import pgtrigger
import pytest
from django.db import connection, transaction
from django.test import override_settings

import pgpubsub
from pgpubsub.durable import DurableDelivery
from pgpubsub.models import Notification
from pgpubsub.triggers import trigger_name
from tests.app.channels import OrderChannel, TicketChannel
from tests.app.models import Delivery, Order, Ticket

pytestmark = pytest.mark.django_db(transaction=True)


def drain(*channels):
    DurableDelivery("default").drain(list(channels))


def stored(channel):
    return {row.payload["trigger"]: row.payload for row in Notification.from_channel(channel)}


def test_stored_trigger_events_have_1_3_1_keys_plus_trigger_and_op():
    ticket = Ticket.objects.create(code="t-1")
    ticket.code = "t-2"
    ticket.save()
    Ticket.objects.filter(pk=ticket.pk).delete()
    row = {"id": ticket.pk, "code": "t-1"}
    changed = {"id": ticket.pk, "code": "t-2"}
    common = {"app": "app", "model": "Ticket", "context": {}}
    assert stored(TicketChannel) == {
        "after_insert": {
            **common,
            "trigger": "after_insert",
            "op": "INSERT",
            "old": None,
            "new": row,
        },
        "before_update": {
            **common,
            "trigger": "before_update",
            "op": "UPDATE",
            "old": row,
            "new": changed,
        },
        "after_update": {
            **common,
            "trigger": "after_update",
            "op": "UPDATE",
            "old": row,
            "new": changed,
        },
        "after_delete": {
            **common,
            "trigger": "after_delete",
            "op": "DELETE",
            "old": changed,
            "new": None,
        },
    }


def test_stored_trigger_events_carry_the_context_set_in_their_transaction():
    with transaction.atomic():
        pgpubsub.set_notification_context({"request": "r-9"})
        ticket = Ticket.objects.create(code="c-1")
        ticket.code = "c-2"
        ticket.save()
    contexts = {trigger: event["context"] for trigger, event in stored(TicketChannel).items()}
    assert contexts == {
        "after_insert": {"request": "r-9"},
        "before_update": {"request": "r-9"},
        "after_update": {"request": "r-9"},
    }


def test_stored_trigger_events_keep_their_shape_while_another_trigger_is_ignored():
    before = "app.Ticket:" + trigger_name(TicketChannel, "BEFORE", "UPDATE")
    with pgtrigger.ignore(before):
        ticket = Ticket.objects.create(code="i-1")
        with transaction.atomic():
            pgpubsub.set_notification_context({"request": "r-3"})
            Ticket.objects.filter(pk=ticket.pk).update(code="i-2")
    events = stored(TicketChannel)
    assert events["after_insert"] == {
        "app": "app",
        "model": "Ticket",
        "trigger": "after_insert",
        "op": "INSERT",
        "context": {},
        "old": None,
        "new": {"id": ticket.pk, "code": "i-1"},
    }
    assert events["after_update"]["context"] == {"request": "r-3"}
    assert events["after_update"]["new"] == {"id": ticket.pk, "code": "i-2"}
    assert set(events) == {"after_insert", "after_update"}


def test_an_ignored_after_trigger_stores_nothing():
    with pgtrigger.ignore("app.Ticket:" + trigger_name(TicketChannel, "AFTER", "INSERT")):
        Ticket.objects.create(code="quiet")
    assert stored(TicketChannel) == {}


def test_a_listener_filter_on_app_and_model_matches_stored_trigger_events():
    Ticket.objects.create(code="kept-for-the-filter")
    Order.objects.create(reference="left-by-the-filter")
    with override_settings(PGPUBSUB_LISTENER_FILTER="tests.app.filters.TicketsOnly"):
        drain(TicketChannel, OrderChannel)
    assert Delivery.objects.filter(listener="ticket_created").count() == 1
    assert not Delivery.objects.filter(listener="order_created").exists()
    assert Notification.from_channel(OrderChannel).count() == 1


def insert(channel, payload_sql, *params):
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO pgpubsub_notification (channel, payload) "
            f"VALUES (%s, {payload_sql}) RETURNING id",
            [channel.listen_safe_name(), *params],
        )
        return cursor.fetchone()[0]


def test_a_stored_trigger_event_must_name_the_channels_model():
    row = '"new": {"id": 1, "code": "x"}, "op": "INSERT", "trigger": "after_insert"'
    anonymous = insert(TicketChannel, "%s::jsonb", "{" + row + "}")
    foreign = insert(TicketChannel, "%s::jsonb", '{"app": "app", "model": "Order", ' + row + "}")
    named = insert(TicketChannel, "%s::jsonb", '{"app": "app", "model": "ticket", ' + row + "}")
    drain(TicketChannel)
    # TicketChannel.max_attempts = 1: a failure is a dead letter at once.
    dead = {n.pk: n.last_error for n in Notification.objects.filter(state="dead")}
    assert set(dead) == {anonymous, foreign}
    assert (
        "does not name its model (no 'app' and 'model' keys); expected app.Ticket"
        in (dead[anonymous])
    )
    assert "is for the model app.Order, but the channel's model is app.Ticket" in dead[foreign]
    assert not Notification.objects.filter(pk=named).exists()
    assert Delivery.objects.filter(listener="ticket_created").count() == 1


def test_an_event_stored_as_a_json_string_is_read():
    # django-pgpubsub 1.3.1's notify() stored its payloads as JSON strings.
    insert(
        OrderChannel,
        "to_jsonb(%s::text)",
        '{"app": "app", "model": "Order", "old": null, "new": {"id": 5, "reference": "str",'
        ' "amount": 1}, "context": {}}',
    )
    drain(OrderChannel)
    assert list(
        Delivery.objects.filter(listener="order_created").values_list("key", flat=True)
    ) == ["str"]
    assert not Notification.objects.exists()
