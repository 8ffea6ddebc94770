"""End to end: ``listen`` stops at once, with one clear line, on what no retry can fix.

A database that does not exist, a role that does not exist (SQLSTATE
classes 3D and 28) and a database ``migrate`` has not run on make the
command exit non-zero without a traceback, with one worker or a
supervisor. A server that cannot be reached is retried, and said so in
other words than a connection lost after it had worked.
"""

from __future__ import annotations

import os

import pytest
from psycopg.conninfo import make_conninfo

from tests.conftest import db_url

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

PROCESSES = [["--worker"], ["--processes", "2"]]


def finished(worker, timeout: float = 20.0) -> tuple[int, str]:
    worker.proc.wait(timeout)
    worker._reader.join(5)
    return worker.proc.returncode, worker.output


@pytest.mark.parametrize("args", PROCESSES, ids=["worker", "supervisor"])
@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"dbname": "pgpubsub_no_such_database"}, 'database "pgpubsub_no_such_database"'),
        ({"user": "pgpubsub_no_such_role"}, 'role "pgpubsub_no_such_role"'),
    ],
    ids=["database", "role"],
)
def test_a_bad_database_setting_stops_listen_at_once(start_worker, args, setting, message):
    url = make_conninfo(db_url(), **setting)
    worker = start_worker(*args, ready=False, extra_env={"DATABASE_URL": url})
    code, output = finished(worker)
    assert code != 0
    assert "cannot connect to database 'default' (configuration error)" in output
    assert message in output and "does not exist" in output
    assert "Check DATABASES['default']" in output
    assert "reconnecting" not in output and "retrying" not in output
    assert "Traceback" not in output


@pytest.mark.parametrize("args", PROCESSES, ids=["worker", "supervisor"])
def test_listen_before_migrate_says_to_run_migrate(start_worker, empty_database, args):
    worker = start_worker(*args, ready=False, extra_env={"DATABASE_URL": empty_database})
    code, output = finished(worker)
    assert code != 0
    assert "Traceback" not in output
    [line] = [line for line in output.splitlines() if "pgpubsub's tables" in line]
    assert "run `python manage.py migrate` first" in line
    assert "does not exist" not in output  # no SQL error leaks out


def test_an_unreachable_server_is_retried_in_its_own_words(start_worker, tmp_path):
    # A socket directory with no server in it: nothing answers, yet.
    url = make_conninfo(db_url(), host=str(tmp_path))
    worker = start_worker("--worker", ready=False, extra_env={"DATABASE_URL": url})
    worker.wait_for_output("retrying in", count=2)
    assert worker.proc.poll() is None
    assert "cannot connect to the database" in worker.output
    assert "connection lost" not in worker.output
    assert "configuration error" not in worker.output
    assert worker.stop() == 0
    assert os.listdir(tmp_path) == []
