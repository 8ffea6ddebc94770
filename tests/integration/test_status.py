"""``manage.py pgpubsub status|health|deadletters`` against a real database."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

import pgpubsub
from pgpubsub import status
from pgpubsub.models import Notification
from tests.app.channels import AuthorChannel, DurableGreeting, Greeting, OrderChannel
from tests.conftest import MANAGE, db_url, wait_for

pytestmark = pytest.mark.django_db


def run(*args: str) -> tuple[int, str, str]:
    """Run ``manage.py pgpubsub ARGS``; return (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("pgpubsub", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def channel_json(data: dict, channel: type) -> dict:
    [entry] = [c for c in data["channels"] if c["name"] == channel.name()]
    return entry


def trigger_of(channel: type, name_part: str) -> status.TriggerStatus:
    [entry] = [c for c in status.collect().channels if c.name == channel.name()]
    [trigger] = [t for t in entry.triggers if name_part in t.name]
    return trigger


def test_status_lists_every_channel_with_its_listeners_and_triggers():
    code, out, _ = run("status")
    assert code == 0
    for channel in (AuthorChannel, OrderChannel, Greeting, DurableGreeting):
        assert channel.name() in out
        assert channel.listen_safe_name() in out
    assert "tests.app.listeners.author_post_insert_second" in out
    assert "tests.app.listeners.durable_greet" in out
    assert "Triggers match the code." in out
    data = json.loads(run("status", "--json")[1])
    author = channel_json(data, AuthorChannel)
    assert author["mode"] == "broadcast" and author["model"] == "app.Author"
    # One trigger per (timing, operation) the listeners use, all installed.
    assert len(author["triggers"]) == 6
    assert {t["state"] for t in author["triggers"]} == {"installed"}
    assert all(t["enabled"] for t in author["triggers"])
    assert channel_json(data, OrderChannel)["mode"] == "durable"
    assert channel_json(data, Greeting)["triggers"] == []
    assert data["problems"] == []
    assert data["database"] == connection.settings_dict["NAME"]
    assert 0 <= data["notify_queue_usage"] < 1


def test_status_detects_missing_outdated_and_orphaned_triggers():
    after_insert = trigger_of(AuthorChannel, "after_insert")
    before_delete = trigger_of(AuthorChannel, "before_delete")
    with connection.cursor() as cursor:
        cursor.execute(f'DROP TRIGGER {after_insert.pgid} ON "app_author"')
        # Same hash comment, different function: edited by hand.
        cursor.execute(
            f"CREATE OR REPLACE FUNCTION {before_delete.pgid}() RETURNS TRIGGER "
            "LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$"
        )
        # A trigger publishing through pgpubsub that no code declares.
        cursor.execute(
            "CREATE FUNCTION stray_publish() RETURNS TRIGGER LANGUAGE plpgsql AS $$ BEGIN "
            "PERFORM pgpubsub_publish_v1('pgpubsub_stray', false, '{}'::jsonb, '[]'::jsonb); "
            "RETURN NULL; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER stray_after_insert AFTER INSERT ON app_post "
            "FOR EACH STATEMENT EXECUTE FUNCTION stray_publish()"
        )
        after_update = trigger_of(AuthorChannel, "after_update")
        cursor.execute(f'ALTER TABLE "app_author" DISABLE TRIGGER {after_update.pgid}')

    assert trigger_of(AuthorChannel, "after_insert").state == status.MISSING
    assert trigger_of(AuthorChannel, "before_delete").state == status.OUTDATED
    assert "function body" in trigger_of(AuthorChannel, "before_delete").detail
    assert trigger_of(AuthorChannel, "after_update").enabled is False
    assert trigger_of(AuthorChannel, "before_insert").state == status.INSTALLED

    code, out, _ = run("status")
    assert code == 0
    line = next(line for line in out.splitlines() if after_insert.name in line)
    assert "MISSING" in line and "app_author" in line and "AFTER INSERT" in line
    assert "OUTDATED" in next(line for line in out.splitlines() if before_delete.name in line)
    assert "stray_after_insert" in out and "pgpubsub_stray" in out
    assert "4 problem(s) between code and database" in out

    code, text, _ = run("status", "--json", "--check")
    assert code == 1
    data = json.loads(text)
    states = {t["name"]: t["state"] for t in channel_json(data, AuthorChannel)["triggers"]}
    assert states[after_insert.name] == "missing"
    assert states[before_delete.name] == "outdated"
    [orphan] = data["orphaned_triggers"]
    assert orphan == {
        "table": "app_post",
        "pgid": "stray_after_insert",
        "db_channel": "pgpubsub_stray",
        "channel": None,
        "enabled": True,
    }
    assert len(data["problems"]) == 4


def test_status_check_passes_when_nothing_drifted():
    assert run("status", "--check")[0] == 0


def test_status_says_when_pgpubsub_tables_are_missing():
    with connection.cursor() as cursor:  # rolled back with the test's transaction
        cursor.execute("DROP TABLE pgpubsub_notification")
    code, out, _ = run("status", "--check")
    assert code == 1
    assert "pgpubsub's tables are missing from the database; run migrate" in out
    # No table, no count: the backlog and dead letters are unknown, not 0.
    row = next(line for line in out.splitlines() if line.strip().startswith(OrderChannel.name()))
    assert row.split()[2:7] == ["durable", "1", "-", "-", "-"]
    data = json.loads(run("status", "--json")[1])
    order = channel_json(data, OrderChannel)
    assert order["pending"] is None and order["dead_letters"] is None


def test_status_reports_backlog_and_dead_letters():
    pgpubsub.notify(DurableGreeting, message="one")
    pgpubsub.notify(DurableGreeting, message="two")
    Notification.objects.create(
        channel=OrderChannel.listen_safe_name(),
        payload={"new": {"reference": "x"}},
        state=Notification.DEAD,
        attempts=3,
        last_error="Traceback ...\nRuntimeError: x always fails",
    )
    data = json.loads(run("status", "--json")[1])
    greeting = channel_json(data, DurableGreeting)
    assert greeting["pending"] == 2 and greeting["dead_letters"] == 0
    assert greeting["oldest_pending_age"] >= 0
    order = channel_json(data, OrderChannel)
    assert order["pending"] == 0 and order["dead_letters"] == 1
    assert channel_json(data, Greeting)["pending"] is None  # broadcast: nothing stored
    out = run("status")[1]
    row = next(line for line in out.splitlines() if line.strip().startswith(DurableGreeting.name()))
    assert row.split()[2:5] == ["durable", "1", "2"]


def no_worker_sessions() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")  # read afresh in this transaction
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'pgpubsub-worker'"
        )
        return cursor.fetchone()[0] == 0


def test_health_fails_without_workers_and_passes_with_one():
    # Sessions of workers stopped by earlier tests end a moment after them.
    wait_for(no_worker_sessions, what="earlier tests' worker sessions to end")
    code, _, err = run("health")
    assert code == 1
    assert "UNHEALTHY: 0 worker LISTEN session(s) connected" in err
    assert "need at least 1" in err
    assert run("health", "--min-workers", "0")[0] == 0
    # A session that presents itself as a worker (as `listen` does).
    with psycopg.connect(db_url(), application_name="pgpubsub-worker", autocommit=True):
        code, out, _ = run("health")
        assert code == 0 and "1 worker LISTEN session(s) connected" in out
        assert "need at least 2" in run("health", "--min-workers", "2")[2]
        data = json.loads(run("status", "--json")[1])
        assert len(data["workers"]) == 1


def test_health_fails_when_the_database_is_unreachable():
    env = {**os.environ, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nowhere"}
    proc = subprocess.run(
        [sys.executable, str(MANAGE), "pgpubsub", "health", "--timeout", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "UNHEALTHY: cannot reach database 'default'" in proc.stderr


def dead_letter(channel: type, reference: str, age_days: int = 0) -> Notification:
    from django.utils import timezone

    return Notification.objects.create(
        channel=channel.listen_safe_name(),
        payload={"trigger": "t", "op": "INSERT", "new": {"reference": reference}},
        state=Notification.DEAD,
        attempts=3,
        created_at=timezone.now() - timezone.timedelta(days=age_days),
        last_error=f"Traceback (most recent call last):\nRuntimeError: {reference} always fails",
    )


def test_deadletters_list_retry_and_purge():
    old = dead_letter(OrderChannel, "old", age_days=3)
    recent = dead_letter(OrderChannel, "recent")
    greeting = dead_letter(DurableGreeting, "greeting")
    pending = Notification.objects.create(channel=OrderChannel.listen_safe_name(), payload={})

    code, out, _ = run("deadletters", "list")
    assert code == 0
    assert "RuntimeError: old always fails" in out and "3 dead letter(s)." in out
    assert OrderChannel.name() in out
    listed = json.loads(run("deadletters", "list", "--json", "--channel", OrderChannel.name())[1])
    assert [row["id"] for row in listed] == [old.pk, recent.pk]
    assert listed[0]["error"] == "RuntimeError: old always fails"
    assert listed[0]["traceback"] == old.last_error
    assert listed[0]["payload"] == old.payload

    assert "Purged 1 dead letter(s)." in run("deadletters", "purge", "--older-than", "86400")[1]
    assert not Notification.objects.filter(pk=old.pk).exists()

    assert "Retried 1 dead letter(s)." in run("deadletters", "retry", "--id", str(recent.pk))[1]
    recent.refresh_from_db()
    assert (recent.state, recent.attempts) == (Notification.PENDING, 0)

    assert (
        "Purged 1 dead letter(s)."
        in run("deadletters", "purge", "--channel", "tests.app.channels.DurableGreeting")[1]
    )
    assert not Notification.objects.filter(pk=greeting.pk).exists()
    # Pending notifications are never purged.
    assert run("deadletters", "purge", "--all")[1].startswith("Purged 0")
    assert Notification.objects.filter(pk=pending.pk).exists()
    assert run("deadletters", "list")[1].strip() == "No dead letters."


def test_deadletters_reject_an_unknown_channel():
    with pytest.raises(CommandError, match=r"tests\.app\.channels\.Nope"):
        call_command("pgpubsub", "deadletters", "list", "--channel", "tests.app.channels.Nope")


class Terminal(io.StringIO):
    """A standard input that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_purging_every_dead_letter_needs_all_or_a_yes(monkeypatch):
    for message in ("a", "b"):
        Notification.objects.create(
            channel=DurableGreeting.listen_safe_name(),
            payload={"kwargs": {"message": message}},
            state=Notification.DEAD,
        )
    # Not on a terminal: refused, nothing deleted.
    with pytest.raises(CommandError, match="add --all to do that"):
        call_command("pgpubsub", "deadletters", "purge")
    assert Notification.objects.filter(state="dead").count() == 2
    # On a terminal: asked.
    monkeypatch.setattr(sys, "stdin", Terminal())
    asked = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "n")
    assert run("deadletters", "purge")[1].strip() == "Nothing purged."
    assert asked == ["Purge all 2 dead letter(s) of every channel? [y/N] "]
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert "Purged 2 dead letter(s)." in run("deadletters", "purge")[1]
    assert not Notification.objects.exists()
