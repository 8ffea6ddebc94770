"""tools/pgserver.py: the embedded server's settings, restarts and the ``run`` wrapper.

Each test drives a server of its own, in a data directory of its own (so the
server the suite runs on is never touched), through the command line as
``make`` uses it or through the Python API as the fault tests use it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import REPO, wait_for
from tools import pgserver

pytestmark = pytest.mark.slow

PGSERVER = [sys.executable, str(REPO / "tools" / "pgserver.py")]

# Run by `pgserver.py run`: report what the command sees, exit with status 3.
REPORT = """
import json, os, psycopg
with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
    settings = {
        name: conn.execute("SELECT current_setting(%s)", [name]).fetchone()[0]
        for name in ("fsync", "full_page_writes", "max_connections", "listen_addresses")
    }
print(json.dumps({"settings": settings, "pgdata": os.environ["PGPUBSUB_EMBEDDED_PGDATA"]}))
raise SystemExit(3)
"""


@pytest.fixture(scope="module")
def pgdata() -> Iterator[Path]:
    """A data directory for this module's server, created by the first test that starts it."""
    # Inside the checkout, like .pgdata: as root, the package opens every parent
    # directory of a data directory to its system user.
    path = REPO / ".pgdata-test"
    shutil.rmtree(path, ignore_errors=True)
    yield path
    pgserver.stop(path, mode="immediate")
    shutil.rmtree(path, ignore_errors=True)


def pgserver_env(pgdata: Path, **extra: str) -> dict[str, str]:
    """This environment without the suite's own server, pointing at ``pgdata``."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", pgserver.ENV_EMBEDDED)}
    return {**env, pgserver.ENV_PGDATA: str(pgdata), **extra}


def run(pgdata: Path, *cmd: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PGSERVER, "run", "--", *cmd],
        env=pgserver_env(pgdata, **extra),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_applies_our_settings_passes_the_exit_status_and_stops_the_server(pgdata):
    durable = run(pgdata, sys.executable, "-c", REPORT, PGPUBSUB_PG_DURABLE="1")
    assert durable.returncode == 3, durable.stderr
    assert "started embedded PostgreSQL" in durable.stderr
    seen = json.loads(durable.stdout)
    assert seen["pgdata"] == str(pgdata)
    # A new cluster: the settings needing a restart are in place at once.
    assert seen["settings"] == {
        "fsync": "on",
        "full_page_writes": "on",
        "max_connections": "200",
        "listen_addresses": "",
    }
    assert pgserver.status_url(pgdata) is None

    default = run(pgdata, sys.executable, "-c", REPORT)
    assert default.returncode == 3, default.stderr
    assert json.loads(default.stdout)["settings"]["fsync"] == "off"
    assert json.loads(default.stdout)["settings"]["full_page_writes"] == "off"
    assert pgserver.status_url(pgdata) is None


def test_the_last_of_concurrent_runs_stops_the_server(pgdata, tmp_path):
    release = tmp_path / "release"
    first = subprocess.Popen(
        [*PGSERVER, "run", "--", sys.executable, "-c", WAIT_FOR_FILE, str(release)],
        env=pgserver_env(pgdata),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: pgserver.status_url(pgdata), 60, what="the first run's server")
        second = run(pgdata, "true")
        assert second.returncode == 0, second.stderr
        assert "reusing embedded PostgreSQL" in second.stderr
        assert "leaving the server running for 1 other process(es)" in second.stderr
        assert pgserver.status_url(pgdata) is not None
        release.touch()
        assert first.wait(60) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.stderr is not None and "stopped embedded PostgreSQL" in first.stderr.read()
    assert pgserver.status_url(pgdata) is None


def test_sigterm_reaches_the_command_and_still_stops_the_server(pgdata, tmp_path):
    wrapper = subprocess.Popen(
        [*PGSERVER, "run", "--", sys.executable, "-c", WAIT_FOR_FILE, str(tmp_path / "never")],
        env=pgserver_env(pgdata),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: pgserver.status_url(pgdata), 60, what="the run's server")
        wrapper.terminate()
        assert wrapper.wait(60) == 128 + signal.SIGTERM  # the command's fate, passed on
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait()
    assert wrapper.stderr is not None and "stopped embedded PostgreSQL" in wrapper.stderr.read()
    assert pgserver.status_url(pgdata) is None


WAIT_FOR_FILE = """
import sys, time
from pathlib import Path
deadline = time.monotonic() + 60
while not Path(sys.argv[1]).exists() and time.monotonic() < deadline:
    time.sleep(0.05)
"""


def test_a_server_started_by_hand_outlives_run(pgdata):
    url = subprocess.run(
        [*PGSERVER, "start"], env=pgserver_env(pgdata), capture_output=True, text=True, check=True
    ).stdout.strip()
    try:
        assert run(pgdata, "true").returncode == 0
        assert pgserver.status_url(pgdata) == url
    finally:
        assert pgserver.stop(pgdata)


def test_restart_with_downtime_stop_and_start_from_python(pgdata):
    url = pgserver.start(pgdata)
    with psycopg.connect(url, autocommit=True) as conn:
        started_at = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
        began = time.monotonic()
        assert pgserver.restart(pgdata, mode="immediate", downtime=1.0) == url
        assert time.monotonic() - began >= 1.0
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT pg_postmaster_start_time()").fetchone() != started_at

    assert pgserver.stop(pgdata, mode="smart")
    assert pgserver.status_url(pgdata) is None
    assert not pgserver.stop(pgdata)
    with pytest.raises(pgserver.PgServerError, match="unknown shutdown mode 'hard'"):
        pgserver.stop(pgdata, mode="hard")
    assert pgserver.start(pgdata) == url
    assert pgserver.stop(pgdata)


def test_a_stale_pid_file_naming_another_live_process_is_ignored(pgdata):
    pgserver.start(pgdata)
    pid_file = pgdata / "postmaster.pid"
    lines = pid_file.read_text().splitlines()
    assert pgserver.stop(pgdata)
    # As after a reboot: the recorded pid now belongs to some other process.
    pid_file.write_text("\n".join([str(os.getpid()), *lines[1:]]) + "\n")
    assert pgserver.status_url(pgdata) is None
    assert pgserver.start(pgdata)
    assert int(pid_file.read_text().split()[0]) != os.getpid()
    assert pgserver.stop(pgdata)
