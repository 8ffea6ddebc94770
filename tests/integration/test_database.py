"""What triggers and notify() put in the database, read with a raw LISTEN connection."""

from __future__ import annotations

import dataclasses
import json
import select
import time
import uuid

import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils.connection import ConnectionDoesNotExist

import pgpubsub
from pgpubsub.models import Notification, StoredPayload
from tests.app.channels import AuthorChannel, DurableGreeting, Greeting, OrderChannel
from tests.app.models import Author, Order

pytestmark = pytest.mark.django_db(transaction=True)


def received(conn, channel):
    """Payloads of the notifications on ``channel`` committed before this call, in order.

    ``conn`` (autocommit, listening) sends a unique marker last. Notifications
    arrive in commit order, so once the marker is back, everything committed
    before it has arrived too: no time window, and "nothing" is exact.
    """
    marker = f"marker-{uuid.uuid4().hex}"
    conn.execute("SELECT pg_notify(%s, %s)", [channel, marker])
    payloads = []
    for note in conn.notifies(timeout=20):
        if note.channel != channel:
            continue
        if note.payload == marker:
            return payloads
        payloads.append(note.payload)
    raise AssertionError(f"timed out after 20s waiting for the marker {marker!r} on {channel}")


def listen(conn, channel):
    conn.execute(f"LISTEN {channel.listen_safe_name()}")


def test_notify_is_sent_only_after_commit(listen_conn):
    listen(listen_conn, Greeting)
    with transaction.atomic():
        pgpubsub.notify(Greeting, message="hello", count=2)
        assert received(listen_conn, Greeting.listen_safe_name()) == []
    [payload] = received(listen_conn, Greeting.listen_safe_name())
    assert json.loads(payload)["events"] == [{"kwargs": {"message": "hello", "count": 2}}]


def test_rolled_back_notify_is_never_sent(listen_conn):
    listen(listen_conn, Greeting)
    with pytest.raises(RuntimeError), transaction.atomic():
        pgpubsub.notify(Greeting, message="hello")
        raise RuntimeError
    assert received(listen_conn, Greeting.listen_safe_name()) == []


def test_notify_on_another_database_alias(listen_conn):
    listen(listen_conn, Greeting)
    pgpubsub.notify(Greeting, message="aliased", using="default")
    assert len(received(listen_conn, Greeting.listen_safe_name())) == 1


def test_notify_survives_a_new_database_session_and_is_seen_by_query_capture(listen_conn):
    # notify() keeps its cursor between calls: it must follow Django to a new
    # session after the connection is closed, and must not hide its query
    # from Django's query logging (assertNumQueries, DEBUG).
    listen(listen_conn, Greeting)
    pgpubsub.notify(Greeting, message="first")
    connection.close()
    pgpubsub.notify(Greeting, message="after close")
    with CaptureQueriesContext(connection) as captured:
        pgpubsub.notify(Greeting, message="captured")
    pgpubsub.notify(Greeting, message="after capture")
    assert [q["sql"] for q in captured.captured_queries if "pgpubsub_publish_v1" in q["sql"]]
    messages = [
        json.loads(payload)["events"][0]["kwargs"]["message"]
        for payload in received(listen_conn, Greeting.listen_safe_name())
    ]
    assert messages == ["first", "after close", "captured", "after capture"]


def test_notify_after_a_failed_statement_in_an_inner_atomic_block(listen_conn):
    listen(listen_conn, Greeting)
    with transaction.atomic():
        pgpubsub.notify(Greeting, message="kept")
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT 1/0")
        pgpubsub.notify(Greeting, message="after the error")
    messages = [
        json.loads(payload)["events"][0]["kwargs"]["message"]
        for payload in received(listen_conn, Greeting.listen_safe_name())
    ]
    assert messages == ["kept", "after the error"]


def test_payload_over_notify_limit_is_stored_and_referenced(listen_conn):
    listen(listen_conn, Greeting)
    pgpubsub.notify(Greeting, message="z" * 9000)
    [payload] = received(listen_conn, Greeting.listen_safe_name())
    ref = json.loads(payload)["ref"]
    stored = StoredPayload.objects.get(pk=ref)
    assert json.loads(stored.payload)["events"][0]["kwargs"]["message"] == "z" * 9000


def test_bulk_insert_sends_one_notification_per_statement(listen_conn):
    listen(listen_conn, AuthorChannel)
    Author.objects.bulk_create([Author(name=f"a{i}") for i in range(5)])
    messages = [json.loads(p) for p in received(listen_conn, AuthorChannel.listen_safe_name())]
    after = [m for m in messages if "after_insert" in m["trigger"]]
    before = [m for m in messages if "before_insert" in m["trigger"]]
    assert len(after) == 1 and len(after[0]["events"]) == 5
    assert len(before) == 5


def test_before_delete_trigger_does_not_cancel_the_delete():
    author = Author.objects.create(name="gone")
    Author.objects.filter(pk=author.pk).delete()
    assert not Author.objects.filter(pk=author.pk).exists()


def test_durable_notifications_are_stored_in_the_writers_transaction():
    with transaction.atomic():
        Order.objects.create(reference="kept")
        pgpubsub.notify(DurableGreeting, message="kept")
    with pytest.raises(RuntimeError), transaction.atomic():
        Order.objects.create(reference="dropped")
        pgpubsub.notify(DurableGreeting, message="dropped")
        raise RuntimeError
    order_rows = Notification.from_channel(OrderChannel)
    assert [row.payload["new"]["reference"] for row in order_rows] == ["kept"]
    greeting_rows = Notification.from_channel(DurableGreeting)
    assert [row.payload["kwargs"]["message"] for row in greeting_rows] == ["kept"]


def test_notification_context_is_attached_and_bound_to_the_transaction():
    with transaction.atomic():
        pgpubsub.set_notification_context({"request_id": "r-1"})
        Order.objects.create(reference="with-context")
    Order.objects.create(reference="without-context")
    payloads = {row.payload["new"]["reference"]: row.payload for row in Notification.objects.all()}
    assert payloads["with-context"]["context"] == {"request_id": "r-1"}
    assert payloads["without-context"]["context"] == {}


def test_a_context_set_in_an_aborted_transaction_is_ignored():
    # A failed statement caught inside atomic() leaves the transaction
    # aborted without Django knowing: the database answers SQLSTATE 25P02,
    # and the notifications (and their context) will be rolled back anyway.
    with transaction.atomic():
        with connection.cursor() as cursor, pytest.raises(DatabaseError):
            cursor.execute("SELECT 1 / 0")
        pgpubsub.set_notification_context({"request": "lost"})
        transaction.set_rollback(True)


def test_tx_bound_context_outside_atomic_is_an_error():
    with pytest.raises(RuntimeError, match=r"inside transaction\.atomic"):
        pgpubsub.set_notification_context({"a": 1})


def test_hostile_payload_is_stored_verbatim():
    hostile = "'); DROP TABLE pgpubsub_notification; -- $$ %s \\"
    pgpubsub.notify(DurableGreeting, message=hostile)
    assert Notification.objects.get().payload["kwargs"]["message"] == hostile
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pgpubsub_notification")
        assert cursor.fetchone() == (1,)


def test_worker_reads_a_burst_of_notifications_whole_in_order_and_capped(listen_conn, settings):
    # The worker reads on while NOTIFYs are already there, up to the batch
    # size: nothing may be lost, reordered or held back by that.
    from pgpubsub.worker import Worker

    settings.PGPUBSUB_BATCH_SIZE = 300
    worker = Worker([Greeting])
    listen(listen_conn, Greeting)
    with transaction.atomic():
        for i in range(1_000):
            pgpubsub.notify(Greeting, message=f"m{i}")
    got: list[str] = []
    sizes: list[int] = []
    deadline = time.monotonic() + 30
    while len(got) < 1_000 and time.monotonic() < deadline:
        select.select([listen_conn.fileno()], [], [], 1)
        batch = worker._receive(listen_conn)
        if batch:
            sizes.append(len(batch))
        got += [json.loads(n.payload)["events"][0]["kwargs"]["message"] for n in batch]
    assert got == [f"m{i}" for i in range(1_000)]
    # One socket read holds a couple of hundred of these; a batch stops at
    # the first read that reaches the batch size.
    assert max(sizes) < 300 + 300


@dataclasses.dataclass
class Routed(pgpubsub.Channel):
    """A channel with a field named ``using``, which django-pgpubsub 1.3.1 allowed."""

    using: str
    count: int = 0


def test_a_field_named_using_is_a_field_not_the_database(listen_conn):
    listen(listen_conn, Routed)
    returned = pgpubsub.notify(Routed, using="replica-7", count=3)
    [payload] = received(listen_conn, Routed.listen_safe_name())
    assert json.loads(payload)["events"] == [{"kwargs": {"using": "replica-7", "count": 3}}]
    # notify() returns the payload, as 1.3.1's did.
    assert json.loads(returned) == {"kwargs": {"using": "replica-7", "count": 3}}


def test_using_names_the_database_for_other_channels(listen_conn):
    listen(listen_conn, Greeting)
    with pytest.raises(ConnectionDoesNotExist, match="nowhere"):
        pgpubsub.notify(Greeting, message="x", using="nowhere")
    pgpubsub.notify(Greeting, message="x", using="default")
    assert len(received(listen_conn, Greeting.listen_safe_name())) == 1
