"""End to end: ``manage.py listen`` as a subprocess against a real PostgreSQL."""

from __future__ import annotations

import signal
import time

import psycopg
import pytest
from django.db import connection, transaction

import pgpubsub
from pgpubsub.connection import WORKER_APPLICATION_NAME
from pgpubsub.wakeups import LOCK_CLASS
from tests.app.channels import DurableGreeting, Greeting, LoudGreeting
from tests.app.models import Author, Delivery, Order, Post
from tests.conftest import SENTINEL_PREFIX, db_url, key_holders, sentinel, wait_for
from tests.e2e.test_ops import deliveries_blocked, wait_blocked

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def deliveries(listener: str | None = None) -> list[tuple[str, str]]:
    rows = Delivery.objects.exclude(key__startswith=SENTINEL_PREFIX).order_by("id")
    if listener:
        rows = rows.filter(listener=listener)
    return list(rows.values_list("listener", "key"))


def wait_deliveries(count: int, listener: str | None = None, timeout: float = 20.0) -> None:
    def enough() -> bool:
        queryset = Delivery.objects.all()
        if listener:
            queryset = queryset.filter(listener=listener)
        return queryset.count() >= count

    wait_for(enough, timeout, what=f"{count} deliveries to {listener or 'any listener'}")


def test_each_decorator_receives_only_its_operation(start_worker):
    start_worker()
    author = Author.objects.create(name="ada")
    author.name = "ada lovelace"
    author.save()
    pk = str(author.pk)
    author.delete()
    sentinel()

    got = sorted(listener for listener, key in deliveries() if key == pk)
    assert got == sorted(
        [
            "pre_save", "post_save", "pre_insert", "post_insert", "post_insert_second",
            "pre_save", "post_save", "pre_update", "post_update",
            "pre_delete", "post_delete",
        ]
    )  # fmt: skip
    update = Delivery.objects.get(listener="post_update")
    assert update.data == {"old": "ada", "new": "ada lovelace"}
    delete = Delivery.objects.get(listener="pre_delete")
    assert delete.data == {"old": "ada lovelace", "new": None}
    # The BEFORE DELETE trigger did not cancel the delete.
    assert not Author.objects.filter(pk=author.pk).exists()


def test_bulk_writes_update_and_raw_sql_reach_trigger_listeners(start_worker):
    start_worker()
    Author.objects.bulk_create([Author(name=f"bulk{i}") for i in range(50)])
    Author.objects.filter(name__startswith="bulk").update(age=3)
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO app_author (name, age, bio) VALUES (%s, 1, '')", ["raw"])
        cursor.execute("DELETE FROM app_author WHERE name = %s", ["raw"])
    wait_deliveries(51, "post_insert")
    wait_deliveries(50, "post_update")
    wait_deliveries(1, "post_delete")
    inserted = sorted(Delivery.objects.filter(listener="post_insert").values_list("key", flat=True))
    deleted = list(Delivery.objects.filter(listener="post_delete").values_list("key", flat=True))
    assert inserted == sorted(
        [str(pk) for pk in Author.objects.values_list("pk", flat=True)] + deleted
    )
    sentinel()
    assert Delivery.objects.filter(listener="post_update").count() == 50


def test_custom_trigger_listener_with_condition(start_worker):
    start_worker()
    Post.objects.create(title="dull", rating=1)
    good = Post.objects.create(title="great", rating=5)
    sentinel()
    assert deliveries("highly_rated") == [("highly_rated", str(good.pk))]
    assert Delivery.objects.get(listener="highly_rated").data["title"] == "great"


def test_notify_committed_and_rolled_back(start_worker):
    start_worker()
    with transaction.atomic():
        pgpubsub.notify(Greeting, message="kept", count=1)
    try:
        with transaction.atomic():
            pgpubsub.notify("tests.app.channels.Greeting", message="dropped", count=2)
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    with transaction.atomic():
        pgpubsub.notify(Greeting, message="kept-too", count=3)
    wait_deliveries(2, "greet")
    sentinel()
    assert deliveries("greet") == [("greet", "kept"), ("greet", "kept-too")]


def test_hostile_strings_are_delivered_verbatim(start_worker):
    start_worker()
    nasty = [
        "it's",
        'double "quotes"',
        "back\\slash",
        "$$ dollar $$",
        "%s %(x)s %%",
        "'); DROP TABLE app_author; --",
        "unicode ✓ — ünïcødé",
    ]
    for message in nasty:
        pgpubsub.notify(Greeting, message=message)
    wait_deliveries(len(nasty), "greet")
    assert [key for _, key in deliveries("greet")] == nasty
    assert Author.objects.count() == 0  # the table still exists


def test_identical_notifications_in_one_transaction_are_all_delivered(start_worker):
    start_worker()
    with transaction.atomic():
        pgpubsub.notify(Greeting, message="same")
        pgpubsub.notify(Greeting, message="same")
    wait_deliveries(2, "greet")


@pytest.mark.parametrize("optimistic", ["1", "0"])
def test_failing_listener_does_not_stop_the_worker(start_worker, optimistic):
    worker = start_worker(extra_env={"PGPUBSUB_TEST_OPTIMISTIC": optimistic})
    pgpubsub.notify(Greeting, message="boom")
    pgpubsub.notify(Greeting, message="after")
    wait_deliveries(1, "greet")
    assert deliveries("greet") == [("greet", "after")]
    # The other listener on the channel still saw the failing notification.
    assert ("greet_second", "boom") in deliveries("greet_second")
    worker.wait_for_output("the greeting listener refuses 'boom'")
    assert (
        "tests.app.listeners.greet failed on channel tests.app.channels.Greeting" in worker.output
    )
    assert "Traceback" in worker.output
    assert worker.proc.poll() is None


def test_sigterm_and_sigint_exit_zero_promptly(start_worker):
    for sig in (signal.SIGTERM, signal.SIGINT):
        worker = start_worker()
        started = time.monotonic()
        worker.signal(sig)
        assert worker.proc.wait(10) == 0
        assert time.monotonic() - started < 5
        assert "stopped" in worker.output


def test_notifications_committed_during_startup_are_not_missed(start_worker):
    # The durable outbox is read after LISTEN, so rows committed before the
    # worker runs are processed when it starts.
    with transaction.atomic():
        Order.objects.create(reference="before-start")
        pgpubsub.notify(DurableGreeting, message="before-start")
    start_worker()
    wait_deliveries(1, "order_created")
    wait_deliveries(1, "durable_greet")


def test_large_payloads_are_delivered(start_worker):
    start_worker()
    big = "x" * 200_000
    pgpubsub.notify(Greeting, message=big)
    author = Author.objects.create(name="big", bio="y" * 50_000)
    wait_deliveries(1, "greet")
    wait_deliveries(1, "post_insert")
    assert Delivery.objects.get(listener="greet").key == big
    assert Delivery.objects.get(listener="post_insert").key == str(author.pk)


def test_processes_supervisor_runs_workers_and_stops_cleanly(start_worker):
    worker = start_worker("--processes", "2", ready=False)
    worker.wait_ready(count=2)
    for i in range(20):
        pgpubsub.notify(DurableGreeting, message=f"d{i}")
    wait_deliveries(20, "durable_greet")
    worker.signal(signal.SIGTERM)
    assert worker.proc.wait(15) == 0
    assert Delivery.objects.filter(listener="durable_greet").count() == 20


def test_listen_channels_takes_the_subclasses_of_a_channel(start_worker):
    # As in django-pgpubsub 1.3.1: LoudGreeting subclasses Greeting.
    worker = start_worker("--worker", "--channels", "tests.app.channels.Greeting")
    assert "tests.app.channels.LoudGreeting" in worker.output
    pgpubsub.notify(LoudGreeting, message="loud")
    pgpubsub.notify(DurableGreeting, message="not listened")
    sentinel()
    assert deliveries("loud_greet") == [("loud_greet", "loud")]
    assert not deliveries("durable_greet")


@pytest.mark.parametrize("channel", [Greeting, DurableGreeting], ids=["broadcast", "durable"])
def test_a_writer_committing_as_the_worker_goes_idle_is_not_left_to_the_poll(start_worker, channel):
    # The race of the wake-up protocol (pgpubsub.wakeups): a writer checks
    # the channel's key while the worker is awake (so it will not NOTIFY),
    # and commits only after the worker has read the table and gone to
    # sleep. The worker must not sleep then: it sees the writer in flight
    # and reads again shortly. With a poll interval of a minute, an event
    # left to the poll would take a minute.
    start_worker(extra_env={"PGPUBSUB_TEST_POLL_INTERVAL": "60"})
    key = channel.wake_key()
    listener = "greet" if channel is Greeting else "durable_greet"
    with psycopg.connect(db_url()) as writer:
        with deliveries_blocked():
            # The worker is asleep and holds the key: a first event wakes it,
            # it gives the key back and stays busy with the event (blocked).
            pgpubsub.notify(channel, message="wake-up")
            wait_blocked(1)
            # Meanwhile a writer takes the key (shared) and writes.
            free = writer.execute(
                "SELECT pg_try_advisory_xact_lock_shared(%s, %s)", [LOCK_CLASS, key]
            ).fetchone()
            assert free == (True,)
            writer.execute(
                "SELECT pgpubsub_publish_v2(%s, %s, %s, %s::json)",
                [
                    channel.listen_safe_name(),
                    key,
                    channel.publish_flags(),
                    '[{"kwargs": {"message": "raced"}}]',
                ],
            )
        wait_deliveries(1, listener)

        def asked_to_sleep() -> bool:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                    "'pgpubsub-worker' AND query LIKE %s",
                    ["%pgpubsub_sleep_v2%"],
                )
                return cursor.fetchone()[0] > 0

        # The worker has caught up and asked to sleep, while the writer holds the key.
        wait_for(asked_to_sleep, what="the worker to ask to sleep")
        writer.commit()
        committed = time.time()
    wait_deliveries(2, listener, timeout=5)
    delivered = Delivery.objects.get(listener=listener, key="raced").created_at.timestamp()
    assert delivered - committed < 1.0


def test_a_steady_stream_is_delivered_whole_without_waiting_for_a_poll(start_worker):
    # Events paced so that the worker goes to sleep between most of them:
    # each one wakes it, and it must never fall asleep without its key (a
    # lost wake-up would leave events waiting for the poll, a minute away, or
    # for the next retention cleanup, ten seconds away).
    start_worker(extra_env={"PGPUBSUB_TEST_POLL_INTERVAL": "60"})
    count, rate = 600, 200.0
    started = time.monotonic()
    for n in range(count):
        pgpubsub.notify(Greeting, message=f"s{n}")
        time.sleep(max(0.0, started + (n + 1) / rate - time.monotonic()))
    wait_deliveries(count, "greet", timeout=5)
    assert deliveries("greet") == [("greet", f"s{n}") for n in range(count)]


def worker_key_holders(channel: type[pgpubsub.Channel]) -> list[tuple[int, str, str]]:
    """The worker sessions holding ``channel``'s key exclusively: (pid, state, last query)."""
    return key_holders(channel.wake_key(), WORKER_APPLICATION_NAME)


def test_an_event_behind_an_older_transaction_is_read_when_that_one_ends(start_worker):
    # A writer commits without a wake-up while the worker is awake (it
    # holds no key); the worker then asks to sleep, takes the key and reads
    # once more, but the event waits behind an older transaction that is
    # still running and publishes nothing. That transaction's commit wakes
    # nobody, so the worker must not sleep while events wait behind it.
    start_worker(extra_env={"PGPUBSUB_TEST_POLL_INTERVAL": "60"})
    wait_for(lambda: worker_key_holders(Greeting), what="the worker to hold Greeting's key")
    with psycopg.connect(db_url()) as older:
        with deliveries_blocked():
            # Wakes the worker, which gives the key back and stays busy.
            pgpubsub.notify(Greeting, message="wake-up")
            wait_blocked(1)
            older.execute("SELECT pg_current_xact_id()")
            # No reader holds the key: this writer sends no NOTIFY.
            pgpubsub.notify(Greeting, message="behind")

        def read_once_more() -> bool:
            # The worker holds the key again and has read since it took it.
            return any(
                state == "idle" and "pgpubsub_sleep_v2" not in query
                for _, state, query in worker_key_holders(Greeting)
            )

        wait_for(read_once_more, what="the worker to take the key and read once more")
        assert deliveries("greet") == [("greet", "wake-up")]
        older.commit()
        committed = time.time()
    wait_deliveries(2, "greet", timeout=5)
    delivered = Delivery.objects.get(listener="greet", key="behind").created_at.timestamp()
    assert delivered - committed < 1.0


def test_a_worker_that_stops_wakes_the_readers_relying_on_its_keys(start_worker, listen_conn):
    # A second reader of a channel whose key another holds relies on that one
    # to be woken. When the holder stops, it gives its keys back and NOTIFYs,
    # so the other asks for the keys again instead of sleeping until its
    # poll, a minute away here.
    first = start_worker(extra_env={"PGPUBSUB_TEST_POLL_INTERVAL": "60"})
    holders = wait_for(
        lambda: worker_key_holders(Greeting), what="the first worker to hold the key"
    )
    start_worker(extra_env={"PGPUBSUB_TEST_POLL_INTERVAL": "60"})
    name = Greeting.listen_safe_name()
    listen_conn.execute(f"LISTEN {name}")
    first.stop()
    handed_over = [n for n in listen_conn.notifies(timeout=5, stop_after=1) if n.channel == name]
    assert handed_over and handed_over[0].payload == ""
    assert handed_over[0].pid == holders[0][0]
    wait_for(
        lambda: [pid for pid, _, _ in worker_key_holders(Greeting)] not in ([], [holders[0][0]]),
        what="the second worker to take the key",
    )
    published = time.time()
    pgpubsub.notify(Greeting, message="after the hand-over")
    wait_deliveries(1, "greet", timeout=5)
    delivered = Delivery.objects.get(listener="greet").created_at.timestamp()
    assert delivered - published < 1.0
