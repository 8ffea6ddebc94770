"""The server-version check where pgpubsub first talks to a server.

The real server must pass. To see the refusal, the version query is replaced
by one that returns an old version number: the database stays real, only
the number it answers is faked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder

from pgpubsub import sql
from pgpubsub.exceptions import UnsupportedServerError
from pgpubsub.server_version import MINIMUM_SERVER_VERSION, check_server_version
from pgpubsub.worker import Worker
from tests.conftest import MANAGE, REPO, db_url

pytestmark = pytest.mark.django_db(transaction=True)

#: What a PostgreSQL 14.19 server would answer to sql.SERVER_VERSION.
FAKE_OLD_SERVER = "SELECT 140019, '14.19 (faked)'"


def test_the_server_under_test_is_supported_through_django_and_psycopg():
    with connection.cursor() as cursor:
        version_num = check_server_version(cursor)
    assert version_num >= MINIMUM_SERVER_VERSION
    assert version_num == connection.pg_version
    with psycopg.connect(db_url()) as conn, conn.cursor() as cursor:
        assert check_server_version(cursor) == conn.info.server_version


def test_the_worker_refuses_an_old_server_before_listening(monkeypatch):
    monkeypatch.setattr(sql, "SERVER_VERSION", FAKE_OLD_SERVER)
    worker = Worker()
    # Without the check the worker would serve: stop it, so the test fails
    # rather than hangs.
    stopper = threading.Timer(10, worker.stop)
    stopper.start()
    try:
        with pytest.raises(UnsupportedServerError, match=r"runs PostgreSQL 14\.19 \(faked\)"):
            worker.run(install_signal_handlers=False)
    finally:
        stopper.cancel()


def test_the_migration_that_installs_pgpubsubs_sql_refuses_an_old_server(monkeypatch):
    call_command("migrate", "pgpubsub", "0006", verbosity=0)
    try:
        monkeypatch.setattr(sql, "SERVER_VERSION", FAKE_OLD_SERVER)
        with pytest.raises(UnsupportedServerError, match=r"needs PostgreSQL 15 or newer"):
            call_command("migrate", "pgpubsub", verbosity=0)
        applied = MigrationRecorder(connection).applied_migrations()
        assert ("pgpubsub", "0007_pgpubsub_v1") not in applied
        with connection.cursor() as cursor:
            cursor.execute("SELECT to_regproc('pgpubsub_publish_v1')")
            assert cursor.fetchone() == (None,)
    finally:
        monkeypatch.undo()
        # Going back to 0006 also unapplied the test app's migration, which
        # depends on 0007: migrate everything, as an upgrade does.
        call_command("migrate", verbosity=0)
    assert ("pgpubsub", "0007_pgpubsub_v1") in MigrationRecorder(connection).applied_migrations()


@pytest.mark.e2e
def test_manage_py_listen_on_an_old_server_exits_with_one_line(monkeypatch):
    # manage.py listen, with the version query swapped before Django starts.
    program = (
        "import sys, runpy; import pgpubsub.sql as sql; "
        f"sql.SERVER_VERSION = {FAKE_OLD_SERVER!r}; "
        f"sys.argv = [{str(MANAGE)!r}, 'listen', '--worker']; "
        f"runpy.run_path({str(MANAGE)!r}, run_name='__main__')"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        env={**os.environ, "DATABASE_URL": db_url()},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "CommandError: pgpubsub needs PostgreSQL 15 or newer, but the server runs " in (
        result.stderr
    )
    assert "Traceback" not in result.stderr
