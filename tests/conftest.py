"""Fixtures shared by the test suite.

Tests run against a real PostgreSQL (``DATABASE_URL``, or the embedded
server ``make test`` starts). End-to-end tests run ``manage.py listen`` as a
subprocess against pytest-django's test database and synchronise on
conditions with deadlines, never on bare sleeps.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parent.parent
MANAGE = REPO / "tests" / "manage.py"

# pgpubsub's fixtures for users' suites (pgpubsub_capture, pgpubsub_deliver),
# enabled the way a user enables them.
pytest_plugins = ["pgpubsub.testing.pytest_plugin"]


def wait_for(
    condition: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = ""
) -> Any:
    """Poll ``condition`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


#: Messages of sentinel() notifications start with this; tests leave them out.
SENTINEL_PREFIX = "sentinel-"


def sentinel() -> None:
    """Send a Greeting with a unique message and wait until both its listeners handled it.

    A worker handles the notifications of its LISTEN connection in order, so
    every broadcast notification sent before this one has then been handled
    too. Waiting for this call's own message, never for any delivery, keeps an
    earlier delivery from ending the wait before the sentinel is handled.
    """
    import pgpubsub
    from tests.app.channels import Greeting
    from tests.app.models import Delivery

    message = f"{SENTINEL_PREFIX}{uuid.uuid4().hex}"
    pgpubsub.notify(Greeting, message=message)
    wait_for(
        lambda: (
            set(Delivery.objects.filter(key=message).values_list("listener", flat=True))
            == {"greet", "greet_second"}
        ),
        what=f"both Greeting listeners to handle {message!r}",
    )


def db_url() -> str:
    """A libpq URL for the database the tests currently use (the test database)."""
    return make_conninfo(os.environ["DATABASE_URL"], dbname=connection.settings_dict["NAME"])


def sessions_named(application_name: str) -> int:
    """How many sessions of the test database carry ``application_name``, seen from outside."""
    with psycopg.connect(db_url(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            [application_name],
        ).fetchone()
    return int(row[0]) if row else 0


def key_holders(key: int, application_name: str) -> list[tuple[int, str, str]]:
    """The sessions named ``application_name`` holding wake-up ``key`` exclusively.

    Each as (pid, state, last query), seen from a connection of its own.
    """
    from pgpubsub.wakeups import LOCK_CLASS

    with psycopg.connect(db_url(), autocommit=True) as conn:
        return conn.execute(
            "SELECT a.pid, a.state, a.query FROM pg_locks AS l "
            "JOIN pg_stat_activity AS a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s "
            "AND l.mode = 'ExclusiveLock' AND l.granted AND a.application_name = %s",
            [LOCK_CLASS, key, application_name],
        ).fetchall()


class WorkerProcess:
    """A ``manage.py listen`` subprocess whose output is collected as it runs."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, str(MANAGE), "listen", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for_output(self, text: str, timeout: float = 20.0, count: int = 1) -> None:
        wait_for(
            lambda: self.output.count(text) >= count or self.proc.poll() is not None,
            timeout,
            what=f"{text!r} in worker output",
        )
        if self.output.count(text) < count:
            raise AssertionError(
                f"worker exited ({self.proc.returncode}) before printing {text!r}:\n{self.output}"
            )

    def wait_ready(self, count: int = 1) -> WorkerProcess:
        self.wait_for_output("ready, listening on", count=count)
        return self

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


@pytest.fixture
def start_worker(transactional_db: None) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``manage.py listen`` subprocesses against the test database."""
    workers: list[WorkerProcess] = []
    env = {**os.environ, "DATABASE_URL": db_url(), "PYTHONUNBUFFERED": "1"}

    def start(
        *args: str, ready: bool = True, extra_env: dict[str, str] | None = None
    ) -> WorkerProcess:
        worker = WorkerProcess(list(args) or ["--worker"], {**env, **(extra_env or {})})
        workers.append(worker)
        if ready:
            worker.wait_ready()
        return worker

    yield start
    for worker in workers:
        worker.stop()
        # Shown by pytest only when the test fails.
        print(f"--- output of listen {' '.join(worker.args)} (exit {worker.proc.returncode})")
        print(worker.output)


@pytest.fixture
def listen_conn(transactional_db: None) -> Iterator[psycopg.Connection[Any]]:
    """A raw autocommit connection to the test database, for LISTEN in tests."""
    conn = psycopg.connect(db_url(), autocommit=True)
    yield conn
    conn.close()


@pytest.fixture
def empty_database() -> Iterator[str]:
    """A libpq URL of a new, empty database on the test server (dropped afterwards)."""
    name = f"pgpubsub_empty_{uuid.uuid4().hex[:10]}"
    server = os.environ["DATABASE_URL"]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(server, dbname=name)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            # Also drops the test databases Django made from it (manage.py test).
            for dbname in (name, f"test_{name}"):
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        sql.Identifier(dbname)
                    )
                )
