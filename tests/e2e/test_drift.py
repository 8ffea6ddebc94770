"""End to end: a worker says, at start-up and after each reconnection, where the
code and the database disagree, and which command fixes it."""

from __future__ import annotations

import pytest
from django.db import connection

from pgpubsub.models import Notification
from tests.app.channels import OrderChannel
from tests.app.models import Order

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def stray_trigger():
    """A trigger publishing through pgpubsub that no code declares (removed afterwards:
    flushing the test database does not drop triggers)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION stray_publish() RETURNS TRIGGER LANGUAGE plpgsql AS $$ BEGIN "
            "PERFORM pgpubsub_publish_v1('pgpubsub_stray', false, NULL, NULL, '[]'); "
            "RETURN NULL; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER stray_after_insert AFTER INSERT ON app_post "
            "FOR EACH STATEMENT EXECUTE FUNCTION stray_publish()"
        )
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER stray_after_insert ON app_post")
        cursor.execute("DROP FUNCTION stray_publish()")


def warnings_of(output: str) -> list[str]:
    return [line for line in output.splitlines() if " WARN " in line]


def test_a_listener_without_makemigrations_and_an_orphaned_trigger(start_worker, stray_trigger):
    worker = start_worker(extra_env={"PGPUBSUB_TEST_UNMIGRATED_LISTENER": "1"})
    name = f"{OrderChannel.listen_safe_name()}_after_delete"
    missing = (
        f"pgpubsub: trigger {name} of {OrderChannel.name()} on table app_order is missing, so "
        "AFTER DELETE on app_order publishes nothing; no migration installs it yet; run "
        "`python manage.py makemigrations`, then `python manage.py migrate`"
    )
    orphan = (
        "pgpubsub: orphaned trigger stray_after_insert on table app_post publishes on "
        "pgpubsub_stray, but no code declares it; no migration manages it; if it is not "
        "wanted, drop it with DROP TRIGGER stray_after_insert ON app_post"
    )
    warnings = warnings_of(worker.output)
    assert len(warnings) == 2
    assert warnings[0].endswith(missing) and warnings[1].endswith(orphan)

    # Said again after a reconnection.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'pgpubsub-worker'"
        )
    worker.wait_ready(count=2)
    assert sum(line.endswith(missing) for line in warnings_of(worker.output)) == 2
    assert sum(line.endswith(orphan) for line in warnings_of(worker.output)) == 2


def test_a_channel_switched_from_durable_to_broadcast_without_migrating(start_worker):
    env = {"PGPUBSUB_TEST_ORDER_BROADCAST": "1"}
    worker = start_worker(extra_env=env)
    [outdated] = warnings_of(worker.output)
    assert (
        f"of {OrderChannel.name()} on table app_order is outdated (its definition hash differs "
        "from the code's; its function body differs from the code's); no migration installs it "
        "yet; run `python manage.py makemigrations`, then `python manage.py migrate`"
    ) in outdated

    # The database's trigger still stores the event in the outbox, which a
    # worker of a broadcast channel does not read.
    Order.objects.create(reference="stranded")
    assert Notification.objects.filter(channel=OrderChannel.listen_safe_name()).count() == 1
    assert worker.stop() == 0
    assert "malformed" not in worker.output

    restarted = start_worker(extra_env=env)
    pending = [line for line in warnings_of(restarted.output) if "stored" in line]
    assert len(pending) == 1
    assert (
        f"pgpubsub: {OrderChannel.name()} is a broadcast channel, yet 1 stored notification(s) "
        "of it are pending in the outbox, which no worker reads"
    ) in pending[0]
