"""Switching from django-pgpubsub 1.3.1: its database and its pending notifications carry over."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.db import connection

from pgpubsub.models import Notification
from tests.app.channels import DurableGreeting, Greeting, OrderChannel
from tests.app.models import Delivery
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_database_migrated_by_1_3_1_is_upgraded_and_its_stored_notifications_processed(
    start_worker,
):
    # Back to the schema django-pgpubsub 1.3.1's last migration (0006) left.
    call_command("migrate", "pgpubsub", "0006", verbosity=0)
    with connection.cursor() as cursor:
        # What 1.3.1 stored: notify() rows keyed by dotted path with the
        # payload as a JSON string, trigger rows with app/model/old/new/context.
        cursor.execute(
            "INSERT INTO pgpubsub_notification (channel, payload, created_at) "
            "VALUES (%s, to_jsonb(%s::text), now())",
            ["tests.app.channels.DurableGreeting", '{"kwargs": {"message": "from-1.3.1"}}'],
        )
        cursor.execute(
            "INSERT INTO pgpubsub_notification (channel, payload, created_at) "
            "VALUES (%s, %s::jsonb, now())",
            [
                OrderChannel.listen_safe_name(),
                '{"app": "app", "model": "Order", "old": null, '
                '"new": {"id": 7, "reference": "legacy-order", "amount": 3}, "context": {}}',
            ],
        )
    # Migrating pgpubsub back to 0006 also unapplied the test app's migration,
    # whose triggers depend on 0007: migrate everything, as an upgrade does.
    call_command("migrate", verbosity=0)
    channels = set(Notification.objects.values_list("channel", flat=True))
    assert channels == {DurableGreeting.listen_safe_name(), OrderChannel.listen_safe_name()}
    assert all(isinstance(n.payload, dict) for n in Notification.objects.all())

    start_worker()
    wait_for(
        lambda: (
            Delivery.objects.filter(listener__in=["durable_greet", "order_created"]).count() == 2
        ),
        what="the two notifications stored by 1.3.1",
    )
    assert set(Delivery.objects.values_list("key", flat=True)) == {"from-1.3.1", "legacy-order"}


def test_a_broadcast_payload_in_1_3_1_format_is_delivered(start_worker):
    start_worker()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_notify(%s, %s)",
            [Greeting.listen_safe_name(), '{"kwargs": {"message": "old-format", "count": 2}}'],
        )
    wait_for(lambda: Delivery.objects.filter(listener="greet", key="old-format").exists())
