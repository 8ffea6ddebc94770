"""Event streams served by a real ASGI server (uvicorn) from the test project."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import django
import psutil
import psycopg
import pytest
from django.contrib.auth.models import User
from django.test import Client

from pgpubsub.hub import HUB_APPLICATION_NAME
from tests.conftest import REPO, db_url, wait_for

pytest.importorskip("uvicorn", reason="uvicorn is not installed")

if django.VERSION < (5, 0):
    pytest.skip("pgpubsub.sse needs Django 5.0 or newer", allow_module_level=True)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """uvicorn serving tests/project/asgi.py against the test database: (port, log)."""
    port = _free_port()
    log = tmp_path / "uvicorn.log"
    env = {
        **os.environ,
        "DATABASE_URL": db_url(),
        "DJANGO_SETTINGS_MODULE": "tests.project.settings",
        "PYTHONPATH": str(REPO),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "uvicorn", "tests.project.asgi:application"),
                *("--port", str(port), "--lifespan", "off", "--timeout-graceful-shutdown", "1"),
            ],
            env=env,
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"uvicorn exited:\n{log.read_text()}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/admin/login/", timeout=2).close()
            return True
        except OSError:
            return False

    try:
        wait_for(answers, timeout=30, what="uvicorn to answer")
        yield port, log
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _open(port: int, path: str, cookie: str) -> socket.socket:
    """Open a stream and read until it is subscribed (its first ``id:``)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
        f"Cookie: sessionid={cookie}\r\n\r\n".encode()
    )
    received = b""
    while b"\nid: " not in received:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError(f"the stream ended: {received!r}")
        received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received
    assert b"x-accel-buffering: no" in received.lower()
    return sock


def _threads(port: int) -> int:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid).num_threads()
    raise AssertionError(f"no process listens on {port}")


def _backends() -> dict[str, int]:
    """Connections to the test database other than this test's, by application_name."""
    with psycopg.connect(db_url(), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT application_name, count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "GROUP BY application_name"
        ).fetchall()
    return {name: int(count) for name, count in rows}


def test_open_streams_hold_no_database_connection_and_no_thread_each(server):
    # Each stream logs in (its session and user are read from the database
    # in the request's thread): those connections close before streaming,
    # and the thread Django keeps for each request is let go.
    port, log = server
    client = Client()
    client.force_login(User.objects.create_user("ann", password="pw"))
    cookie = client.cookies["sessionid"].value
    before = sum(_backends().values())
    _open(port, "/live/login/notes/", cookie).close()
    threads_before = _threads(port)
    sockets = [_open(port, "/live/login/notes/", cookie) for _ in range(40)]
    try:
        held = _backends()
        # One hub connection for all forty streams, and no connection per stream.
        assert held.get(HUB_APPLICATION_NAME) == 1, held
        assert sum(held.values()) <= before + 2, held
        assert _threads(port) <= threads_before + 2
    finally:
        for sock in sockets:
            sock.close()
    assert "Traceback" not in log.read_text()
