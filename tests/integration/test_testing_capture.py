"""pgpubsub.testing.capture(): what a block published, in TestCase and TransactionTestCase."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import timedelta

import psycopg
import pytest
from django.db import connection, transaction
from django.test import TestCase, TransactionTestCase

import pgpubsub
from pgpubsub.exceptions import ChannelNotFound
from pgpubsub.models import Notification
from pgpubsub.testing import Published, capture
from tests.app.channels import (
    AuthorChannel,
    DurableGreeting,
    Greeting,
    LoudGreeting,
    OrderChannel,
    RetainedAuthorChannel,
    RetainedGreeting,
    TicketChannel,
)
from tests.app.models import Author, Delivery, Order, Ticket
from tests.conftest import db_url


@dataclass
class KeptDurableGreeting(pgpubsub.Channel):
    """Durable and retained: its events are written to the outbox and to the event log."""

    message: str
    lock_notifications = True
    retention = timedelta(hours=1)


def in_other_thread(work):
    """Run ``work`` in a thread of its own, on its own connection, committing as it goes."""
    failure: list[BaseException] = []

    def run():
        try:
            work()
        except BaseException as exc:  # pragma: no cover - reported below
            failure.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    if failure:
        raise failure[0]


class CaptureInTestCase(TestCase):
    """Nothing commits: the events are rows of the test's own transaction."""

    def test_a_save_publishes_its_rows_on_the_trigger_channels(self):
        with capture() as published:
            author = Author.objects.create(name="ann")

        inserted = published.of(AuthorChannel, trigger="after_insert")
        assert inserted == [
            Published(AuthorChannel, {"old": None, "new": author}, "INSERT", "after_insert")
        ]
        assert inserted[0].new.name == "ann"
        assert inserted[0].old is None
        # The BEFORE trigger's event comes first, then the AFTER trigger's.
        assert [event.trigger for event in published.of(AuthorChannel)] == [
            "before_insert",
            "after_insert",
        ]
        # A retained channel on the same model publishes too (no listener needed).
        [kept] = published.of(RetainedAuthorChannel)
        assert (kept.op, kept.new.name) == ("INSERT", "ann")
        # Capturing delivers nothing.
        assert not Delivery.objects.exists()

    def test_updates_and_deletes_carry_old_and_new(self):
        author = Author.objects.create(name="ann", age=30)
        with capture(AuthorChannel) as published:
            author.age = 31
            author.save()
            author.delete()

        [updated] = published.of(AuthorChannel, trigger="after_update")
        assert (updated.op, updated.old.age, updated.new.age) == ("UPDATE", 30, 31)
        [deleted] = published.of(AuthorChannel, op="DELETE", trigger="after_delete")
        assert deleted.new is None and deleted.old.name == "ann"

    def test_app_channels_carry_their_typed_fields(self):
        with capture() as published:
            pgpubsub.notify(Greeting, message="hi", count=2)
            pgpubsub.notify(RetainedGreeting, message="kept")

        assert published.events == [
            Published(Greeting, {"message": "hi", "count": 2}),
            Published(RetainedGreeting, {"message": "kept"}),
        ]
        with pytest.raises(AttributeError, match="Greeting is an app channel"):
            _ = published[0].new

    def test_durable_channels_are_read_from_the_outbox_and_left_there(self):
        with capture() as published:
            order = Order.objects.create(reference="ord-1")
            pgpubsub.notify(DurableGreeting, message="stored")
            Ticket.objects.create(code="t-1")  # a channel whose model is given as a label

        assert published.of(OrderChannel) == [
            Published(OrderChannel, {"old": None, "new": order}, "INSERT", "after_insert")
        ]
        assert published.of(OrderChannel)[0].new.reference == "ord-1"
        assert published.of(DurableGreeting)[0].kwargs == {"message": "stored"}
        assert published.of(TicketChannel)[0].new.code == "t-1"
        # Nothing consumed: a worker (or deliver()) still has them to process.
        assert Notification.objects.count() == 3

    def test_a_durable_channel_with_retention_is_captured_once(self):
        with capture(KeptDurableGreeting) as published:
            pgpubsub.notify(KeptDurableGreeting, message="once")
        assert published.events == [Published(KeptDurableGreeting, {"message": "once"})]

    def test_only_what_the_block_published(self):
        # Written before the block, by the same transaction: not captured.
        Author.objects.create(name="before")
        pgpubsub.notify(Greeting, message="before")
        Order.objects.create(reference="before")
        with capture() as published:
            pgpubsub.notify(Greeting, message="inside")
            Order.objects.create(reference="inside")
        pgpubsub.notify(Greeting, message="after")
        Order.objects.create(reference="after")

        assert [event.kwargs["message"] for event in published.of(Greeting)] == ["inside"]
        assert [event.new.reference for event in published.of(OrderChannel)] == ["inside"]
        assert published.of(AuthorChannel) == []

    def test_events_of_a_rolled_back_savepoint_are_not_captured(self):
        with capture(Greeting) as published:
            try:
                with transaction.atomic():
                    pgpubsub.notify(Greeting, message="undone")
                    raise RuntimeError("roll back")
            except RuntimeError:
                pass
            pgpubsub.notify(Greeting, message="kept")
        assert [event.kwargs["message"] for event in published] == ["kept"]

    def test_events_come_in_the_order_they_were_published(self):
        with capture(Greeting, AuthorChannel, OrderChannel) as published:
            pgpubsub.notify(Greeting, message="first")
            Order.objects.create(reference="durable")
            Author.objects.create(name="second")
            pgpubsub.notify(LoudGreeting, message="third")

        # One transaction: broadcast and retained channels in order, then
        # durable ones (the outbox and the event tables share no sequence).
        assert published.channels == [
            Greeting,
            AuthorChannel,
            AuthorChannel,
            LoudGreeting,
            OrderChannel,
        ]

    def test_channels_narrow_what_is_captured_and_include_subclasses(self):
        with capture("tests.app.channels.Greeting") as published:
            pgpubsub.notify(Greeting, message="a")
            pgpubsub.notify(LoudGreeting, message="b")
            pgpubsub.notify(DurableGreeting, message="c")
            Author.objects.create(name="d")
        assert published.channels == [Greeting, LoudGreeting]
        assert published.of(LoudGreeting)[0].kwargs == {"message": "b", "count": 0, "volume": 11}

    def test_the_notification_context_is_captured(self):
        with capture(Greeting, OrderChannel) as published, transaction.atomic():
            pgpubsub.set_notification_context({"by": "ann"})
            pgpubsub.notify(Greeting, message="hi")
            Order.objects.create(reference="ctx")
        assert [event.context for event in published] == [{"by": "ann"}, {"by": "ann"}]

    def test_it_can_be_read_while_the_block_runs(self):
        with capture(Greeting) as published:
            pgpubsub.notify(Greeting, message="one")
            assert len(published) == 1
            pgpubsub.notify(Greeting, message="two")
            assert [event.kwargs["message"] for event in published] == ["one", "two"]
        pgpubsub.notify(Greeting, message="three")
        assert len(published) == 2

    def test_an_unknown_channel_is_an_error(self):
        with pytest.raises(ChannelNotFound, match=r"tests\.app\.channels\.Nope"):
            capture("tests.app.channels.Nope").__enter__()


class CaptureInTransactionTestCase(TransactionTestCase):
    """Writes commit: the events are rows that committed after the block began."""

    def test_committed_writes_are_captured(self):
        with capture() as published:
            author = Author.objects.create(name="ann")
            pgpubsub.notify(Greeting, message="hi")
            order = Order.objects.create(reference="ord-1")

        assert published.of(AuthorChannel, trigger="after_insert")[0].new == author
        assert published.of(RetainedAuthorChannel)[0].new == author
        assert published.of(Greeting)[0].kwargs == {"message": "hi", "count": 0}
        assert published.of(OrderChannel)[0].new == order

    def test_transactions_come_in_the_order_they_began(self):
        with capture(Greeting, OrderChannel) as published:
            Order.objects.create(reference="first")
            pgpubsub.notify(Greeting, message="second")
            Order.objects.create(reference="third")
        assert published.channels == [OrderChannel, Greeting, OrderChannel]

    def test_a_block_inside_a_transaction_sees_its_uncommitted_events(self):
        with transaction.atomic():
            pgpubsub.notify(Greeting, message="before")
            with capture(Greeting, DurableGreeting) as published:
                pgpubsub.notify(Greeting, message="inside")
                pgpubsub.notify(DurableGreeting, message="inside, stored")
        assert [event.kwargs["message"] for event in published] == [
            "inside",
            "inside, stored",
        ]

    def test_events_committed_by_other_connections_during_the_block_are_captured(self):
        in_other_thread(lambda: pgpubsub.notify(Greeting, message="before"))
        with capture(Greeting, OrderChannel) as published:
            in_other_thread(lambda: pgpubsub.notify(Greeting, message="elsewhere"))
            in_other_thread(lambda: Order.objects.create(reference="elsewhere"))
            pgpubsub.notify(Greeting, message="here")
        in_other_thread(lambda: pgpubsub.notify(Greeting, message="after"))

        assert [event.kwargs["message"] for event in published.of(Greeting)] == [
            "elsewhere",
            "here",
        ]
        assert [event.new.reference for event in published.of(OrderChannel)] == ["elsewhere"]

    def test_events_committed_before_the_block_are_not_captured_behind_an_older_transaction(
        self,
    ):
        # An older transaction still running holds the horizon back: the
        # events committed after it began sit above it, yet were published
        # before the block.
        with psycopg.connect(db_url()) as older:
            older.execute("SELECT pg_current_xact_id()")
            pgpubsub.notify(Greeting, message="before")
            with capture(Greeting) as published:
                pgpubsub.notify(Greeting, message="inside")
            older.rollback()
        assert [event.kwargs["message"] for event in published] == ["inside"]

    def test_a_transaction_still_open_when_the_block_ends_is_not_captured(self):
        started, release = threading.Event(), threading.Event()

        def open_transaction():
            with transaction.atomic():
                pgpubsub.notify(Greeting, message="late")
                started.set()
                release.wait(30)

        thread = threading.Thread(target=lambda: (open_transaction(), connection.close()))
        with capture(Greeting) as published:
            thread.start()
            assert started.wait(30)
        release.set()
        thread.join(30)
        assert published.events == []
