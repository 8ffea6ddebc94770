"""End to end: per-channel settings, context options, stored-notification helpers."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.test import override_settings

import pgpubsub
from pgpubsub.models import Notification
from tests.app.channels import DurableGreeting, TicketChannel
from tests.app.models import Author, Delivery, Order, Ticket
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_per_channel_max_attempts_and_model_given_as_label(start_worker):
    worker = start_worker()
    Ticket.objects.create(code="bad-1")
    Ticket.objects.create(code="good-1")
    wait_for(lambda: Delivery.objects.filter(listener="ticket_created").exists())
    dead = wait_for(
        lambda: list(Notification.from_channel(TicketChannel).filter(state="dead")),
        what="the bad ticket to be dead-lettered",
    )
    # TicketChannel.max_attempts = 1, although PGPUBSUB_MAX_ATTEMPTS is 3.
    assert [n.attempts for n in dead] == [1]
    assert "ticket bad-1 is bad" in dead[0].last_error
    worker.wait_for_output("dead-lettered after 1 attempts")


@pytest.mark.parametrize("optimistic", ["1", "0"])
def test_a_listener_that_swallows_a_database_error_fails_its_notification(start_worker, optimistic):
    start_worker(extra_env={"PGPUBSUB_TEST_OPTIMISTIC": optimistic})
    Ticket.objects.create(code="swallow-1")
    Ticket.objects.create(code="good-2")
    [dead] = wait_for(
        lambda: list(Notification.from_channel(TicketChannel).filter(state="dead")),
        what="the notification whose listener swallowed an error to be dead-lettered",
    )
    assert "InFailedSqlTransaction" in dead.last_error or "aborted" in dead.last_error
    wait_for(lambda: Delivery.objects.filter(listener="ticket_created", key="good-2").exists())
    assert not Delivery.objects.filter(key="swallow-1").exists()


def test_database_errors_in_a_listener_are_its_failures_not_lost_connections(start_worker):
    worker = start_worker()
    Order.objects.create(reference="timeout-1")
    Order.objects.create(reference="fine-1")
    wait_for(
        lambda: Notification.objects.filter(state="dead").count() == 1,
        what="the timing-out notification to be dead-lettered",
    )
    assert "canceling statement due to statement timeout" in Notification.objects.get().last_error
    wait_for(
        lambda: Delivery.objects.filter(listener="order_created", key="fine-1").exists(),
        what="the order committed after the failing one",
    )
    assert "reconnecting" not in worker.output


def test_pass_context_setting_reaches_trigger_and_kwargs_listeners(start_worker):
    # With the setting, the test app's (old, new) trigger listeners cannot
    # take context, which the system check pgpubsub.E001 reports: skip it.
    start_worker("--worker", "--skip-checks", extra_env={"PGPUBSUB_TEST_PASS_CONTEXT": "1"})
    with transaction.atomic():
        pgpubsub.set_notification_context({"who": "admin"})
        Author.objects.create(name="with context")
    pgpubsub.notify("tests.app.channels.Greeting", message="no context parameter needed")
    wait_for(lambda: Delivery.objects.filter(listener="author_any_event").exists())
    # Both the BEFORE and the AFTER INSERT events reach this catch-all listener.
    wait_for(lambda: Delivery.objects.filter(listener="author_any_event").count() == 2)
    datas = Delivery.objects.filter(listener="author_any_event").values_list("data", flat=True)
    assert list(datas) == [{"who": "admin"}, {"who": "admin"}]
    # The app-level listener without a context parameter still works.
    wait_for(lambda: Delivery.objects.filter(listener="greet").exists())


@override_settings(PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT=False)
def test_session_scoped_context_lasts_beyond_the_transaction():
    try:
        pgpubsub.set_notification_context({"session": True})
        pgpubsub.notify(DurableGreeting, message="first")
        pgpubsub.notify(DurableGreeting, message="second")
        contexts = [n.payload.get("context") for n in Notification.objects.order_by("id")]
        assert contexts == [{"session": True}, {"session": True}]
    finally:
        connection.close()  # do not leak the session setting into other tests


def test_process_stored_notifications_wakes_workers(start_worker, listen_conn):
    listen_conn.execute(f"LISTEN {DurableGreeting.listen_safe_name()}")
    pgpubsub.process_stored_notifications([DurableGreeting])
    notes = [n for n in listen_conn.notifies(timeout=1, stop_after=1)]
    assert [(n.channel, n.payload) for n in notes] == [(DurableGreeting.listen_safe_name(), "")]
