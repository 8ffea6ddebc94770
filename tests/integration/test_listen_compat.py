"""pgpubsub.listen: django-pgpubsub 1.3.1's listen_to_channels(), process_notifications()
and listen(), which users' test suites drive by hand."""

from __future__ import annotations

import dataclasses
from unittest import mock

import pytest
from django.db import connection

import pgpubsub
from pgpubsub.exceptions import ChannelNotFound
from pgpubsub.listen import (
    HOLDER_APPLICATION_NAME,
    listen,
    listen_to_channels,
    process_notifications,
)
from pgpubsub.models import Notification
from pgpubsub.registry import registered_channels, registry
from tests.app.channels import (
    DurableGreeting,
    Greeting,
    LoudGreeting,
    OrderChannel,
    UrgentGreeting,
)
from tests.app.models import Author, Delivery, Order
from tests.conftest import sessions_named, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def delivered(listener):
    return sorted(Delivery.objects.filter(listener=listener).values_list("key", flat=True))


def test_process_notifications_runs_the_listeners_of_what_the_connection_received():
    listening = listen_to_channels()
    author = Author.objects.create(name="ann")
    Order.objects.create(reference="ord-1")
    pgpubsub.notify(Greeting, message="hi", count=2)
    listening.poll()
    received = {notify.channel for notify in listening.notifies}
    assert {
        Greeting.listen_safe_name(),
        OrderChannel.listen_safe_name(),
    } <= received
    assert not Delivery.objects.exists()

    process_notifications(listening)

    assert delivered("post_insert") == [str(author.pk)]
    assert delivered("order_created") == ["ord-1"]
    assert Delivery.objects.get(listener="greet").key == "hi"
    assert not Notification.objects.exists()
    assert listening.notifies == []


@pytest.fixture
def relay():
    """A listener of Greeting that sends a DurableGreeting, for the duration of a test."""

    def relay_greeting(message: str, count: int) -> None:
        pgpubsub.notify(DurableGreeting, message=f"relayed {message}")

    pgpubsub.listener(Greeting)(relay_greeting)
    yield
    registry[Greeting] = [lst for lst in registry[Greeting] if lst.callback is not relay_greeting]


def test_notifications_sent_by_listeners_are_processed_in_the_same_call(relay):
    listening = listen_to_channels([Greeting, "tests.app.channels.DurableGreeting"])
    pgpubsub.notify(Greeting, message="first")
    process_notifications(listening)
    assert delivered("durable_greet") == ["relayed first"]
    assert not Notification.objects.exists()


def test_only_the_channels_listened_to_are_processed():
    listening = listen_to_channels([Greeting])
    Order.objects.create(reference="not-listened")
    process_notifications(listening)
    assert not Delivery.objects.filter(listener="order_created").exists()
    assert Notification.from_channel(OrderChannel).count() == 1


def test_a_channel_brings_its_subclasses_with_listeners():
    assert registered_channels([Greeting]) == [Greeting, LoudGreeting]
    listening = listen_to_channels([Greeting])
    pgpubsub.notify(LoudGreeting, message="loud")
    process_notifications(listening)
    assert Delivery.objects.filter(listener="loud_greet").exists()


def test_process_stored_notifications_wakes_the_subclasses_too(listen_conn):
    listen_conn.execute(f"LISTEN {UrgentGreeting.listen_safe_name()}")
    pgpubsub.process_stored_notifications([DurableGreeting])
    assert [n.channel for n in listen_conn.notifies(timeout=1, stop_after=1)] == [
        UrgentGreeting.listen_safe_name()
    ]


def test_listen_to_channels_needs_a_channel_with_listeners():
    @dataclasses.dataclass
    class Lonely(pgpubsub.Channel):
        message: str

    with pytest.raises(ChannelNotFound, match="no listeners are registered on it"):
        listen_to_channels([Lonely])


def test_listen_with_poll_off_processes_the_stored_notifications_and_returns():
    Order.objects.create(reference="stored-1")
    pgpubsub.notify(UrgentGreeting, message="stored-2")
    with mock.patch("pgpubsub.listen.POLL", False):
        listen(recover=False)
        assert Notification.objects.count() == 2
        listen(recover=True)
    assert delivered("order_created") == ["stored-1"]
    assert delivered("urgent_greet") == ["stored-2"]
    assert not Notification.objects.exists()


def test_channel_not_found_takes_no_argument_as_in_1_3_1():
    assert str(ChannelNotFound()) == "Channel not found"
    assert ChannelNotFound().channel is None


def holder_sessions() -> int:
    """The sessions holding channels' keys for listen_to_channels(), seen from outside."""
    return sessions_named(HOLDER_APPLICATION_NAME)


def test_the_key_holder_never_outlives_the_django_connection():
    # 1.3.1's own suite calls listen_to_channels() in a fixture and never
    # stops it; a session left behind would keep the test database from
    # being dropped, and be counted as a worker.
    connection.close()  # a new connection, without the holders of earlier tests
    wait_for(lambda: holder_sessions() == 0, timeout=5, what="earlier holders to close")
    listening = listen_to_channels([Greeting])
    assert holder_sessions() == 1
    pgpubsub.notify(Greeting, message="still woken")
    listening.poll()
    assert [n.channel for n in listening.notifies] == [Greeting.listen_safe_name()]
    connection.close()
    wait_for(lambda: holder_sessions() == 0, timeout=5, what="the key holder to close")


def test_calls_on_one_connection_share_one_holder_until_the_last_stops():
    connection.close()  # a new connection, without the holders of earlier tests
    wait_for(lambda: holder_sessions() == 0, timeout=5, what="earlier holders to close")
    calls = [listen_to_channels([Greeting]) for _ in range(3)]
    assert holder_sessions() == 1
    for listening in calls[:2]:
        listening.stop()
    assert holder_sessions() == 1
    pgpubsub.notify(Greeting, message="third")
    calls[2].poll()
    assert [n.channel for n in calls[2].notifies] == [Greeting.listen_safe_name()]
    calls[2].stop()
    assert holder_sessions() == 0
