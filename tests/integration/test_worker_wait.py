"""The worker's wait on its LISTEN socket, against a real PostgreSQL."""

from __future__ import annotations

import select
import threading
import time

import psycopg
import pytest
from psycopg import sql as psql

from pgpubsub import eventlog
from pgpubsub.connector import send_last
from pgpubsub.selfpipe import Waker
from pgpubsub.wakeups import LOCK_CLASS, wake_key
from pgpubsub.worker import Worker
from tests.app.channels import Greeting
from tests.conftest import db_url, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_notify_that_arrived_during_a_statement_ends_the_wait_at_once(listen_conn):
    # The server sends a NOTIFY that arrives while a statement runs before
    # that statement's end; psycopg keeps it, and the socket is quiet
    # afterwards. Waiting on the socket then would sleep through it.
    name = Greeting.listen_safe_name()
    listen_conn.execute(f"LISTEN {name}")
    pid = listen_conn.info.backend_pid

    def notify_while_busy() -> None:
        with psycopg.connect(db_url(), autocommit=True) as other:

            def busy() -> bool:
                row = other.execute(
                    "SELECT wait_event FROM pg_stat_activity WHERE pid = %s", [pid]
                ).fetchone()
                return row is not None and row[0] == "PgSleep"

            wait_for(busy, what="the statement to run")
            other.execute("SELECT pg_notify(%s, '')", [name])

    thread = threading.Thread(target=notify_while_busy)
    thread.start()
    listen_conn.execute("SELECT pg_sleep(1)")
    thread.join()
    # The NOTIFY is in psycopg's hands: a wait on the socket alone would sleep.
    assert select.select([listen_conn.fileno()], [], [], 0.2)[0] == []

    worker = Worker([Greeting])
    worker._waker = Waker()
    try:
        started = time.monotonic()
        worker._wait(listen_conn, 5)
        assert time.monotonic() - started < 1
        assert [n.channel for n in worker._receive(listen_conn)] == [name]
    finally:
        worker._waker.close()


def test_the_hand_over_sent_last_runs_after_the_connection_closes(listen_conn):
    # A worker on its way out sends the hand-over without waiting for it and
    # closes: the server still runs it, with the name bound safely.
    name = "custom 'channel' \"quoted\""
    listen_conn.execute(psql.SQL("LISTEN {}").format(psql.Identifier(name)))
    key = wake_key(name)
    leaving = psycopg.connect(db_url(), autocommit=True)
    assert leaving.execute("SELECT pg_try_advisory_lock(%s, %s)", [LOCK_CLASS, key]).fetchone()
    send_last(leaving, eventlog.hand_over([name]))
    leaving.close()
    got = list(listen_conn.notifies(timeout=5, stop_after=1))
    assert [(n.channel, n.payload) for n in got] == [(name, "")]
    free = listen_conn.execute(
        "SELECT pg_try_advisory_lock(%s, %s), pg_advisory_unlock(%s, %s)",
        [LOCK_CLASS, key, LOCK_CLASS, key],
    ).fetchone()
    assert free == (True, True)
