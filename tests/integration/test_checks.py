"""pgpubsub's system checks, run as ``manage.py check`` runs them."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command
from django.db import connection

from pgpubsub import drift, status
from tests.app.channels import AuthorChannel, OrderChannel
from tests.integration.test_status import trigger_of

pytestmark = pytest.mark.django_db


def check(*args: str) -> str:
    """``manage.py check ARGS``'s report (warnings do not fail the command)."""
    out, err = io.StringIO(), io.StringIO()
    call_command("check", *args, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def drop_trigger(channel: type, name_part: str):
    trigger = trigger_of(channel, name_part)
    with connection.cursor() as cursor:  # rolled back with the test's transaction
        cursor.execute(f'DROP TRIGGER {trigger.pgid} ON "{trigger.table}"')
    return trigger


def test_drift_is_a_warning_of_check_with_a_database():
    trigger = drop_trigger(AuthorChannel, "after_insert")
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION stray_publish() RETURNS TRIGGER LANGUAGE plpgsql AS $$ BEGIN "
            "PERFORM pgpubsub_publish_v2('pgpubsub_stray', 0, 0, '[]'); "
            "RETURN NULL; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER stray_after_insert AFTER INSERT ON app_post "
            "FOR EACH STATEMENT EXECUTE FUNCTION stray_publish()"
        )
    report = check("--database", "default")
    assert report.count("(pgpubsub.W002)") == 2
    # The migration that installs it is applied: it was dropped by hand.
    assert (
        f"trigger {trigger.name} of {AuthorChannel.name()} on table app_author is missing, "
        "so AFTER INSERT on app_author publishes nothing; its migration "
        "app.0005_faster_statement_triggers is applied, so it was changed in the "
        "database by hand; run `python manage.py "
        f"pgtrigger install app.Author:{trigger.name}` to reinstall it"
    ) in report
    assert (
        "orphaned trigger stray_after_insert on table app_post publishes on pgpubsub_stray, "
        "but no code declares it; no migration manages it; if it is not wanted, drop it with "
        "DROP TRIGGER stray_after_insert ON app_post"
    ) in report
    # Django runs database checks only for the databases it is given.
    assert "pgpubsub.W002" not in check()


def test_drift_that_migrate_fixes_is_left_to_migrate():
    drop_trigger(OrderChannel, "after_insert")
    with connection.cursor() as cursor:
        # As if app.0005_faster_statement_triggers, which installs the
        # trigger, were not applied.
        cursor.execute("DELETE FROM django_migrations WHERE app = 'app'")
    assert "pgpubsub.W002" not in check("--database", "default")
    # The worker still says so, naming the migration.
    problems = drift.find(status.collect(), None, drift.MigrationFacts.read("default"))
    [missing] = [problem for problem in problems if "after_insert of" in problem.message]
    assert missing.fixed_by_migrate
    assert missing.message.endswith(
        "run `python manage.py migrate` (migration app.0005_faster_statement_triggers installs it)"
    )


def test_a_disabled_trigger_is_a_warning_naming_the_enable_command():
    trigger = trigger_of(AuthorChannel, "after_update")
    with connection.cursor() as cursor:
        cursor.execute(f'ALTER TABLE "app_author" DISABLE TRIGGER {trigger.pgid}')
    report = check("--database", "default")
    assert f"run `python manage.py pgtrigger enable app.Author:{trigger.name}`" in report


def test_no_drift_no_warning():
    assert "pgpubsub" not in check("--database", "default")
