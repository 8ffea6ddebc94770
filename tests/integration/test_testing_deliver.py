"""pgpubsub.testing.deliver(): the listeners of what a test published, run in the test's thread."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import transaction
from django.test import TestCase, TransactionTestCase, override_settings

import pgpubsub
from pgpubsub.exceptions import ChannelNotFound
from pgpubsub.listen import listen_to_channels, process_notifications
from pgpubsub.models import Notification
from pgpubsub.registry import registry
from pgpubsub.testing import DeliveryLoopError, capture, deliver
from tests.app.channels import (
    DurableGreeting,
    Greeting,
    OrderChannel,
    RetainedAuthorChannel,
    RetainedGreeting,
    RetryProbe,
    TicketChannel,
    UrgentGreeting,
)
from tests.app.models import Author, Delivery, Order, Ticket


def delivered(listener: str) -> list[str]:
    return list(Delivery.objects.filter(listener=listener).values_list("key", flat=True))


@contextlib.contextmanager
def listening(channel: Any, callback: Callable[..., Any]) -> Iterator[None]:
    """Register ``callback`` on ``channel`` for the duration of the block."""
    pgpubsub.listener(channel)(callback)
    try:
        yield
    finally:
        registry[channel] = [lst for lst in registry[channel] if lst.callback is not callback]
        if not registry[channel]:
            del registry[channel]


def record_greeting(message: str, **_: Any) -> None:
    Delivery.objects.create(listener="recorded", key=message)


def record_author(old: Any, new: Any) -> None:
    Delivery.objects.create(listener="recorded", key=(new or old).name)


def relay_to_durable(message: str, count: int) -> None:
    if not message.startswith("relayed"):
        pgpubsub.notify(DurableGreeting, message=f"relayed {message}")


def relay_to_broadcast(message: str) -> None:
    pgpubsub.notify(Greeting, message=f"relayed {message}")


def echo(message: str, count: int) -> None:
    pgpubsub.notify(Greeting, message=message, count=count + 1)


def echo_stored(message: str) -> None:
    pgpubsub.notify(DurableGreeting, message=message)


class DeliverInTestCase(TestCase):
    """Nothing commits: the listeners run in the test's transaction, as if it had."""

    def test_trigger_listeners_run_when_the_block_ends(self):
        with deliver():
            author = Author.objects.create(name="ann")
            assert not Delivery.objects.exists()
        for listener in (
            "pre_save",
            "pre_insert",
            "post_save",
            "post_insert",
            "post_insert_second",
        ):
            assert delivered(listener) == [str(author.pk)], listener
        assert delivered("post_update") == []

    def test_app_channel_listeners_receive_the_fields(self):
        with deliver():
            pgpubsub.notify(Greeting, message="hi", count=3)
        assert delivered("greet") == ["hi"]
        assert Delivery.objects.get(listener="greet").data == {"count": 3}
        assert delivered("greet_second") == ["hi"]

    def test_durable_notifications_are_claimed_and_completed(self):
        with deliver():
            Order.objects.create(reference="ord-1")
            pgpubsub.notify(UrgentGreeting, message="stored")
            assert Notification.objects.count() == 2
        assert delivered("order_created") == ["ord-1"]
        assert delivered("urgent_greet") == ["stored"]
        assert not Notification.objects.exists()

    def test_retained_channels_are_delivered(self):
        with (
            listening(RetainedGreeting, record_greeting),
            listening(RetainedAuthorChannel, record_author),
            deliver(RetainedGreeting, RetainedAuthorChannel),
        ):
            pgpubsub.notify(RetainedGreeting, message="kept")
            Author.objects.create(name="kept author")
        assert sorted(delivered("recorded")) == ["kept", "kept author"]

    def test_deliver_now_runs_what_was_published_so_far_and_each_event_once(self):
        with deliver(Greeting, OrderChannel) as deliver_now:
            pgpubsub.notify(Greeting, message="one")
            Order.objects.create(reference="ord-1")
            assert deliver_now() == 2
            assert delivered("greet") == ["one"]
            assert delivered("order_created") == ["ord-1"]
            pgpubsub.notify(Greeting, message="two")
        assert delivered("greet") == ["one", "two"]
        assert delivered("order_created") == ["ord-1"]
        assert deliver_now() == 0

    def test_only_what_the_block_published(self):
        pgpubsub.notify(Greeting, message="before")
        Order.objects.create(reference="before")
        with deliver():
            pgpubsub.notify(Greeting, message="inside")
            Order.objects.create(reference="inside")
        pgpubsub.notify(Greeting, message="after")
        Order.objects.create(reference="after")
        assert delivered("greet") == ["inside"]
        assert delivered("order_created") == ["inside"]
        assert sorted(
            Notification.from_channel(OrderChannel).values_list(
                "payload__new__reference", flat=True
            )
        ) == ["after", "before"]

    def test_channels_narrow_what_is_delivered(self):
        with deliver("tests.app.channels.Greeting"):
            pgpubsub.notify(Greeting, message="hi")
            Author.objects.create(name="ann")
            Order.objects.create(reference="ord-1")
        assert delivered("greet") == ["hi"]
        assert delivered("post_insert") == []
        assert delivered("order_created") == []

    def test_events_published_by_listeners_are_delivered_too(self):
        with (
            listening(Greeting, relay_to_durable),
            listening(DurableGreeting, relay_to_broadcast),
            deliver() as deliver_now,
        ):
            pgpubsub.notify(Greeting, message="first")
        # Greeting -> DurableGreeting -> Greeting: three rounds.
        assert delivered("greet") == ["first", "relayed relayed first"]
        assert delivered("durable_greet") == ["relayed first"]
        assert deliver_now.delivered == 3

    def test_listeners_that_keep_publishing_are_stopped(self):
        with (
            listening(Greeting, echo),
            pytest.raises(DeliveryLoopError, match="after 5 rounds") as raised,
            deliver(Greeting, max_rounds=5),
        ):
            pgpubsub.notify(Greeting, message="again")
        assert raised.value.channels == ["tests.app.channels.Greeting"]
        assert delivered("greet") == ["again"] * 5

    @override_settings(PGPUBSUB_BATCH_SIZE=1)
    def test_durable_listeners_that_keep_publishing_are_stopped(self):
        # One notification per claim: a drain would take each new one in turn.
        with (
            listening(DurableGreeting, echo_stored),
            pytest.raises(DeliveryLoopError) as raised,
            deliver(DurableGreeting, max_rounds=4),
        ):
            pgpubsub.notify(DurableGreeting, message="again")
        assert raised.value.rounds == 4
        assert raised.value.channels == ["tests.app.channels.DurableGreeting"]
        assert delivered("durable_greet") == ["again"] * 4

    def test_a_listener_failure_is_raised_after_the_others_ran(self):
        with pytest.raises(ValueError, match="refuses 'boom'"), deliver():
            pgpubsub.notify(Greeting, message="boom")
            pgpubsub.notify(Greeting, message="fine")
        # The failing call was rolled back; every other listener call ran.
        assert delivered("greet") == ["fine"]
        assert delivered("greet_second") == ["boom", "fine"]

    @override_settings(PGPUBSUB_OPTIMISTIC_BATCHES=False)
    def test_failures_are_raised_in_guarded_mode_too(self):
        with (
            pytest.raises(ValueError, match="ticket bad-2 is bad"),
            deliver(TicketChannel, Greeting),
        ):
            Ticket.objects.create(code="bad-2")
            pgpubsub.notify(Greeting, message="boom")
        assert delivered("greet_second") == ["boom"]
        assert Notification.objects.get().state == Notification.DEAD

    def test_failures_can_be_collected_instead(self):
        with deliver(raise_errors=False) as deliverer:
            pgpubsub.notify(Greeting, message="boom")
        [failure] = deliverer.failures
        assert isinstance(failure, ValueError)
        assert delivered("greet_second") == ["boom"]

    def test_a_failing_durable_notification_is_kept_as_a_worker_keeps_it(self):
        with pytest.raises(ValueError, match="ticket bad-1 is bad"), deliver(TicketChannel):
            Ticket.objects.create(code="bad-1")
            Ticket.objects.create(code="good-1")
        # max_attempts = 1: dead-lettered, with the error; the other one completed.
        stored = Notification.objects.get()
        assert (stored.state, stored.attempts) == (Notification.DEAD, 1)
        assert "ticket bad-1 is bad" in stored.last_error
        assert delivered("ticket_created") == ["good-1"]

    def test_nothing_is_delivered_when_the_block_raises(self):
        with pytest.raises(RuntimeError, match="the test failed"), deliver():
            pgpubsub.notify(Greeting, message="hi")
            raise RuntimeError("the test failed")
        assert not Delivery.objects.exists()

    def test_a_channel_without_listeners_is_an_error(self):
        with pytest.raises(ChannelNotFound, match="no listeners are registered"):
            deliver(RetainedGreeting)

    def test_a_deliverer_must_be_started(self):
        with pytest.raises(RuntimeError, match="start the deliverer first"):
            deliver()()

    def test_a_capture_around_it_records_what_it_consumed(self):
        with (
            listening(Greeting, relay_to_durable),
            capture(Greeting, DurableGreeting, OrderChannel) as published,
            deliver(),
        ):
            Order.objects.create(reference="ord-1")
            pgpubsub.notify(Greeting, message="hi")
        assert not Notification.objects.exists()
        assert published.channels == [Greeting, OrderChannel, DurableGreeting]
        assert published.of(DurableGreeting)[0].kwargs == {"message": "relayed hi"}


class DeliverInTransactionTestCase(TransactionTestCase):
    """Writes commit: the listeners run on what committed, in transactions of their own."""

    def test_committed_events_of_every_kind_are_delivered(self):
        with deliver():
            author = Author.objects.create(name="ann")
            pgpubsub.notify(Greeting, message="hi")
            Order.objects.create(reference="ord-1")
        assert delivered("post_insert") == [str(author.pk)]
        assert delivered("greet") == ["hi"]
        assert delivered("order_created") == ["ord-1"]
        assert not Notification.objects.exists()

    def test_a_block_inside_a_transaction(self):
        with transaction.atomic():
            with deliver():
                pgpubsub.notify(Greeting, message="hi")
                Order.objects.create(reference="ord-1")
            assert delivered("greet") == ["hi"]
            assert delivered("order_created") == ["ord-1"]
        assert not Notification.objects.exists()

    def test_events_published_by_listeners_are_delivered_too(self):
        with listening(Greeting, relay_to_durable), deliver():
            pgpubsub.notify(Greeting, message="first")
        assert delivered("durable_greet") == ["relayed first"]
        assert not Notification.objects.exists()

    @override_settings(PGPUBSUB_RETRY_BACKOFF=60)
    def test_a_failing_durable_notification_waits_for_its_retry(self):
        with pytest.raises(RuntimeError, match="the probe p-1 always fails"), deliver(RetryProbe):
            pgpubsub.notify(RetryProbe, label="p-1")
        # Recorded as a worker records it, and not retried before it is due.
        stored = Notification.objects.get()
        assert (stored.state, stored.attempts) == (Notification.PENDING, 1)
        assert "the probe p-1 always fails" in stored.last_error


class ListenCompatInTestCase(TestCase):
    """django-pgpubsub 1.3.1's pair, now thin wrappers over a Deliverer, inside a TestCase."""

    def test_process_notifications_delivers_uncommitted_events(self):
        listening = listen_to_channels()
        author = Author.objects.create(name="ann")
        pgpubsub.notify(Greeting, message="boom")
        Order.objects.create(reference="ord-1")

        process_notifications(listening)  # a listener failure is logged, not raised

        assert delivered("post_insert") == [str(author.pk)]
        assert delivered("greet_second") == ["boom"]
        assert delivered("order_created") == ["ord-1"]
        assert not Notification.objects.exists()
        assert isinstance(listening.deliverer.failures[0], ValueError)
        # The LISTEN takes effect only when a transaction commits, which none does here.
        assert listening.notifies == []
        listening.stop()

    def test_process_notifications_checks_the_database(self):
        listening = listen_to_channels([Greeting])
        with pytest.raises(ValueError, match="listening on 'default'"):
            process_notifications(listening, using="other")
        listening.stop()
