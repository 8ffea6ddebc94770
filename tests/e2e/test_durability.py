"""End to end: durable channels lose nothing and process everything exactly once.

Exactly-once is checked on the listeners' database effects (one Delivery row
per notification), never on logs.
"""

from __future__ import annotations

import io
import os
import signal
import sys

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Count

import pgpubsub
from pgpubsub import outbox
from pgpubsub.models import Notification
from tests.app.channels import AsyncJob, OrderChannel
from tests.app.models import Delivery, Order
from tests.conftest import REPO, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def create_orders(count: int, prefix: str = "o", per_transaction: int = 500, **fields) -> list[str]:
    references = [f"{prefix}-{i}" for i in range(count)]
    for start in range(0, count, per_transaction):
        with transaction.atomic():
            Order.objects.bulk_create(
                [
                    Order(reference=ref, **fields)
                    for ref in references[start : start + per_transaction]
                ]
            )
    return references


def processed() -> int:
    return Delivery.objects.filter(listener="order_created").count()


def assert_exactly_once(references: list[str], timeout: float = 60.0) -> None:
    wait_for(
        lambda: processed() >= len(references), timeout, what=f"{len(references)} orders processed"
    )
    # A notification being handled is still pending: once none is, no late
    # duplicate can arrive after the check below.
    wait_for(
        lambda: not Notification.objects.filter(state="pending").exists(),
        what="the outbox to be empty",
    )
    duplicates = list(
        Delivery.objects.filter(listener="order_created")
        .values("key")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
    )
    assert duplicates == []
    keys = set(Delivery.objects.filter(listener="order_created").values_list("key", flat=True))
    assert keys == set(references)


def test_events_committed_while_no_worker_runs_are_processed_at_start(start_worker):
    references = create_orders(500)
    assert Notification.from_channel(OrderChannel).count() == 500
    start_worker()  # default arguments: no --recover needed
    assert_exactly_once(references)


def test_two_workers_one_killed_mid_stream(start_worker):
    workers = [start_worker(), start_worker()]
    references = create_orders(2000)
    wait_for(lambda: processed() >= 200, what="processing to be under way")
    os.killpg(workers[0].proc.pid, signal.SIGKILL)
    assert_exactly_once(references)


def test_all_connections_terminated_mid_stream(start_worker):
    worker = start_worker()
    references = create_orders(1500)
    wait_for(lambda: processed() >= 100, what="processing to be under way")
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    assert_exactly_once(references)
    worker.wait_for_output("reconnecting")
    worker.wait_ready(count=2)
    assert worker.proc.poll() is None


@pytest.mark.skipif(
    not os.environ.get("PGPUBSUB_EMBEDDED_PGDATA"),
    reason="needs the embedded PostgreSQL (make test) to restart the server",
)
def test_server_restart_mid_stream(start_worker):
    sys.path.insert(0, str(REPO / "tools"))
    import pgserver

    worker = start_worker()
    references = create_orders(1500)
    wait_for(lambda: processed() >= 100, what="processing to be under way")
    pgserver.restart(mode="immediate", downtime=1.0)
    connection.close()
    assert_exactly_once(references)
    worker.wait_ready(count=2)


def test_a_missed_wake_up_delays_processing_by_at_most_the_poll_interval(start_worker):
    start_worker()
    with connection.cursor() as cursor:
        # A stored notification with no NOTIFY at all.
        cursor.execute(
            "INSERT INTO pgpubsub_notification (channel, payload) VALUES (%s, %s::jsonb)",
            [
                OrderChannel.listen_safe_name(),
                '{"app": "app", "model": "Order", "op": "INSERT", '
                '"new": {"id": 1, "reference": "silent", "amount": 0}}',
            ],
        )
    # PGPUBSUB_POLL_INTERVAL is 1 second in the test settings.
    wait_for(lambda: processed() == 1, timeout=5, what="the silent notification")


@pytest.mark.parametrize("optimistic", ["1", "0"])
def test_failing_once_is_retried_and_processed_exactly_once(start_worker, optimistic):
    start_worker(extra_env={"PGPUBSUB_TEST_OPTIMISTIC": optimistic})
    references = create_orders(50, prefix="fail-once")
    assert_exactly_once(references)


def test_always_failing_is_dead_lettered_then_retried_after_the_fix(start_worker):
    broken = start_worker(extra_env={"PGPUBSUB_TEST_BROKEN_LISTENER": "1"})
    references = create_orders(5, prefix="broken")
    create_orders(5, prefix="fine")
    wait_for(
        lambda: Notification.objects.filter(state="dead").count() == 5,
        what="5 dead letters",
    )
    dead = list(outbox.dead_letters([OrderChannel]))
    assert all(n.attempts == 3 for n in dead)  # PGPUBSUB_MAX_ATTEMPTS in the test settings
    assert all("the listener is broken in this deployment" in n.last_error for n in dead)
    assert all("Traceback" in n.last_error for n in dead)
    # Other notifications kept flowing while these failed.
    wait_for(lambda: processed() == 5, what="the 5 fine orders")
    assert set(Delivery.objects.values_list("key", flat=True)) == {f"fine-{i}" for i in range(5)}
    assert broken.stop() == 0

    start_worker()  # the fixed deployment
    out = io.StringIO()
    call_command("pgpubsub", "deadletters", "retry", "--channel", OrderChannel.name(), stdout=out)
    assert "Retried 5 dead letter(s)." in out.getvalue()
    wait_for(lambda: processed() == 10, what="the retried dead letters")
    assert set(
        Delivery.objects.filter(key__startswith="broken").values_list("key", flat=True)
    ) == set(references)
    assert not Notification.objects.exists()


def test_four_workers_on_ten_thousand_events(start_worker):
    for _ in range(4):
        start_worker(ready=False)
    references = create_orders(10_000)
    assert_exactly_once(references, timeout=120)


def test_one_worker_processes_a_channel_in_commit_order(start_worker):
    start_worker()
    references = []
    for i in range(30):
        with transaction.atomic():
            Order.objects.create(reference=f"seq-{i:02d}")
        references.append(f"seq-{i:02d}")
    assert_exactly_once(references)
    assert (
        list(
            Delivery.objects.filter(listener="order_created")
            .order_by("id")
            .values_list("key", flat=True)
        )
        == references
    )


def test_listener_filter_selects_what_a_worker_takes(start_worker):
    start_worker(extra_env={"PGPUBSUB_TEST_LISTENER_FILTER": "tests.app.filters.LargeOrdersOnly"})
    create_orders(5, prefix="small", amount=1)
    large = create_orders(5, prefix="large", amount=500)
    wait_for(lambda: processed() == 5, what="the large orders")
    assert set(Delivery.objects.values_list("key", flat=True)) == set(large)
    assert Notification.objects.filter(state="pending").count() == 5


def test_listener_context_is_kept_with_the_stored_notification(start_worker):
    with transaction.atomic():
        from pgpubsub import set_notification_context

        set_notification_context({"tenant": 7})
        Order.objects.create(reference="ctx")
    start_worker()
    wait_for(lambda: processed() == 1, what="the order")
    assert Delivery.objects.get(listener="order_created").data == {"context": {"tenant": 7}}


def test_an_async_listener_writes_exactly_once_even_when_an_attempt_fails(start_worker, tmp_path):
    # The async listener's ORM writes run in the claim transaction: the failed
    # first attempt's row is rolled back with it, the next attempt's commits.
    calls = tmp_path / "calls"
    start_worker(extra_env={"PGPUBSUB_TEST_ASYNC_LOG": str(calls)})
    pgpubsub.notify(AsyncJob, message="fail-once-1")
    pgpubsub.notify(AsyncJob, message="plain-1")
    wait_for(
        lambda: (
            not Notification.objects.exists()
            and Delivery.objects.filter(listener="async_job").count() == 2
        ),
        what="both async jobs done",
    )
    assert sorted(Delivery.objects.filter(listener="async_job").values_list("key", flat=True)) == [
        "fail-once-1",
        "plain-1",
    ]
    assert calls.read_text().splitlines().count("fail-once-1") == 2
