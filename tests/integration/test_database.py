"""What triggers and notify() put in the database, read with a raw LISTEN connection."""

from __future__ import annotations

import dataclasses
import json
import select
import time
import uuid

import pgtrigger
import psycopg
import pytest
from django.db import DatabaseError, connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils.connection import ConnectionDoesNotExist

import pgpubsub
from pgpubsub import eventlog
from pgpubsub.connector import execute
from pgpubsub.models import Notification
from pgpubsub.triggers import trigger_name
from tests.app.channels import AuthorChannel, DurableGreeting, Greeting, OrderChannel
from tests.app.models import Author, Order
from tests.conftest import db_url

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def published():
    """What has been published on a channel's event table since the test began, in order.

    Read on a connection of its own, so only what committed shows; every
    event committed before the call is below the horizon of its read, so
    "nothing" is exact.
    """
    with psycopg.connect(db_url(), autocommit=True) as conn:
        start = execute(conn.cursor(), eventlog.checkpoint()).position

        def read(channel: type[pgpubsub.Channel] | type[pgpubsub.TriggerChannel]) -> list[dict]:
            query = eventlog.read(eventlog.tables([channel]), start, 10_000)
            rows = execute(conn.cursor(), query).rows
            return [json.loads(row.payload) for row in rows]

        yield read


def test_an_event_is_published_only_when_its_transaction_commits(published):
    with transaction.atomic():
        pgpubsub.notify(Greeting, message="hello", count=2)
        assert published(Greeting) == []
    assert published(Greeting) == [{"kwargs": {"message": "hello", "count": 2}}]


def test_a_rolled_back_notify_publishes_nothing(published):
    with pytest.raises(RuntimeError), transaction.atomic():
        pgpubsub.notify(Greeting, message="hello")
        raise RuntimeError
    assert published(Greeting) == []


def test_notify_on_another_database_alias(published):
    pgpubsub.notify(Greeting, message="aliased", using="default")
    assert len(published(Greeting)) == 1


def test_notify_survives_a_new_database_session_and_is_seen_by_query_capture(published):
    # notify() keeps its cursor between calls: it must follow Django to a new
    # session after the connection is closed, and must not hide its query
    # from Django's query logging (assertNumQueries, DEBUG).
    pgpubsub.notify(Greeting, message="first")
    connection.close()
    pgpubsub.notify(Greeting, message="after close")
    with CaptureQueriesContext(connection) as captured:
        pgpubsub.notify(Greeting, message="captured")
    pgpubsub.notify(Greeting, message="after capture")
    assert [q["sql"] for q in captured.captured_queries if "pgpubsub_publish_v2" in q["sql"]]
    messages = [event["kwargs"]["message"] for event in published(Greeting)]
    assert messages == ["first", "after close", "captured", "after capture"]


def test_notify_after_a_failed_statement_in_an_inner_atomic_block(published):
    with transaction.atomic():
        pgpubsub.notify(Greeting, message="kept")
        with pytest.raises(DatabaseError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT 1/0")
        pgpubsub.notify(Greeting, message="after the error")
    messages = [event["kwargs"]["message"] for event in published(Greeting)]
    assert messages == ["kept", "after the error"]


def test_a_payload_of_any_size_is_one_event(published):
    pgpubsub.notify(Greeting, message="z" * 100_000)
    [event] = published(Greeting)
    assert event["kwargs"]["message"] == "z" * 100_000


def test_a_bulk_insert_publishes_one_event_per_row(published):
    Author.objects.bulk_create([Author(name=f"a{i}") for i in range(5)])
    events = published(AuthorChannel)
    after = [e for e in events if e["trigger"] == "after_insert"]
    before = [e for e in events if e["trigger"] == "before_insert"]
    assert [e["new"]["name"] for e in after] == [f"a{i}" for i in range(5)]
    assert all(e["op"] == "INSERT" and "old" not in e for e in after)
    assert len(before) == 5


def _wake_ups(conn: psycopg.Connection, channel: str) -> int:
    """How many NOTIFYs on ``channel`` ``conn`` has received (a marker ends the count)."""
    marker = f"marker-{uuid.uuid4().hex}"
    conn.execute("SELECT pg_notify(%s, %s)", [channel, marker])
    count = 0
    for note in conn.notifies(timeout=20):
        if note.channel != channel:
            continue
        if note.payload == marker:
            return count
        assert note.payload == "", "a version 2 wake-up carries no payload"
        count += 1
    raise AssertionError(f"timed out waiting for the marker {marker!r} on {channel}")


def test_writers_wake_a_sleeping_reader_once_per_transaction_and_no_one_else(listen_conn):
    name = AuthorChannel.listen_safe_name()
    listen_conn.execute(f"LISTEN {name}")
    # No reader holds the channel's key: nobody is asleep, nothing is sent.
    Author.objects.bulk_create([Author(name=f"a{i}") for i in range(5)])
    assert _wake_ups(listen_conn, name) == 0
    # A reader asleep on the channel (it holds the key).
    assert execute(listen_conn.cursor(), eventlog.ask_to_sleep([AuthorChannel.wake_key()])) == "h"
    # Five BEFORE row triggers and one AFTER statement trigger, one wake-up:
    # identical NOTIFYs in one transaction are delivered once.
    Author.objects.bulk_create([Author(name=f"b{i}") for i in range(5)])
    Author.objects.create(name="c")
    assert _wake_ups(listen_conn, name) == 2
    execute(listen_conn.cursor(), eventlog.give_back([AuthorChannel.wake_key()]))
    Author.objects.create(name="d")
    assert _wake_ups(listen_conn, name) == 0


def test_a_reader_cannot_go_to_sleep_while_a_writer_is_in_flight(listen_conn):
    key = AuthorChannel.wake_key()
    with psycopg.connect(db_url()) as writer:
        writer.execute("INSERT INTO app_author (name, bio) VALUES ('w', '')")
        assert execute(listen_conn.cursor(), eventlog.ask_to_sleep([key])) == "b"
        writer.commit()
    assert execute(listen_conn.cursor(), eventlog.ask_to_sleep([key])) == "h"
    with psycopg.connect(db_url(), autocommit=True) as other_reader:
        assert execute(other_reader.cursor(), eventlog.ask_to_sleep([key])) == "r"


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
    # NOTIFYs that carry events (sent by the SQL of version 1 or by
    # django-pgpubsub 1.3.1) are read while they are already there, up to
    # the batch size: nothing may be lost, reordered or held back by that.
    from pgpubsub.worker import Worker

    settings.PGPUBSUB_BATCH_SIZE = 300
    worker = Worker([Greeting])
    name = Greeting.listen_safe_name()
    listen_conn.execute(f"LISTEN {name}")
    with transaction.atomic(), connection.cursor() as cursor:
        for i in range(1_000):
            message = json.dumps({"events": [{"kwargs": {"message": f"m{i}"}}]})
            cursor.execute("SELECT pg_notify(%s, %s)", [name, message])
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


def test_a_field_named_using_is_a_field_not_the_database(published):
    returned = pgpubsub.notify(Routed, using="replica-7", count=3)
    assert published(Routed) == [{"kwargs": {"using": "replica-7", "count": 3}}]
    # notify() returns the payload, as 1.3.1's did.
    assert json.loads(returned) == {"kwargs": {"using": "replica-7", "count": 3}}


def test_using_names_the_database_for_other_channels(published):
    with pytest.raises(ConnectionDoesNotExist, match="nowhere"):
        pgpubsub.notify(Greeting, message="x", using="nowhere")
    pgpubsub.notify(Greeting, message="x", using="default")
    assert len(published(Greeting)) == 1


def _author_trigger(timing: str) -> str:
    """django-pgtrigger's URI of AuthorChannel's INSERT trigger at ``timing``."""
    return f"app.Author:{trigger_name(AuthorChannel, timing, 'INSERT')}"


def test_pgtrigger_ignore_silences_the_trigger_it_names_and_keeps_the_row(published):
    with pgtrigger.ignore(_author_trigger("AFTER")):
        Author.objects.create(name="statement trigger ignored")
    with pgtrigger.ignore(_author_trigger("BEFORE")):
        Author.objects.create(name="row trigger ignored")
    events = [(e["trigger"], e["new"]["name"]) for e in published(AuthorChannel)]
    assert events == [
        ("before_insert", "statement trigger ignored"),
        ("after_insert", "row trigger ignored"),
    ]
    # An ignored BEFORE row trigger returns the row: the insert happened.
    assert Author.objects.filter(name="row trigger ignored").exists()


def test_a_malformed_ignore_setting_neither_fails_nor_silences_a_write(published):
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config('pgtrigger.ignore', %s, true)", ['{"x,'])
        Author.objects.create(name="loud")
    assert [e["trigger"] for e in published(AuthorChannel)] == ["before_insert", "after_insert"]


def test_ignoring_another_trigger_still_publishes_with_the_context(published):
    """With either setting set, the AFTER trigger tests which: here the
    ignore list names another trigger, and the context is set or not."""
    with pgtrigger.ignore(_author_trigger("BEFORE")):
        Author.objects.create(name="plain")
        with transaction.atomic():
            pgpubsub.set_notification_context({"request": "r-1"})
            Author.objects.create(name="with context")
    events = [(e["new"]["name"], e.get("context")) for e in published(AuthorChannel)]
    assert events == [("plain", None), ("with context", {"request": "r-1"})]


def test_after_trigger_functions_test_both_settings_once_and_hold_no_variables():
    """PL/pgSQL prepares each expression once per transaction: the AFTER
    triggers' functions start with one test of both settings they depend on,
    and declare nothing (a variable's initial value is an expression too)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.tgname, p.prosrc FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE t.tgrelid IN ('app_author'::regclass, 'app_ticket'::regclass) "
            "AND t.tgname LIKE 'pgtrigger_pgpubsub%%after%%'"
        )
        functions = cursor.fetchall()
    assert len(functions) >= 6
    first_test = (
        "IF current_setting('pgtrigger.ignore', true) <> '' "
        "OR current_setting('pgpubsub.notification_context', true) <> '' THEN"
    )
    for name, source in functions:
        assert source.split("BEGIN", 1)[1].lstrip().startswith(first_test), name
        assert "DECLARE" not in source.split("BEGIN", 1)[0], name


def test_trigger_functions_start_no_subtransaction():
    """django-pgtrigger's ignore test catches an error in a subtransaction on
    every statement of every writer; pgpubsub's triggers never call it."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.proname, p.prosrc FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE t.tgrelid = 'app_author'::regclass AND t.tgname LIKE 'pgtrigger_pgpubsub%%'"
        )
        functions = cursor.fetchall()
    assert len(functions) >= 8
    for name, source in functions:
        assert "_pgtrigger_should_ignore" not in source, name
        assert "EXCEPTION" not in source.upper(), name
