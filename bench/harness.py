"""The machinery of the benchmark: implementations, databases, processes, samples.

Everything here runs in the harness process (our ``.venv``). The libraries
under test run only in subprocesses started with their own interpreter:
``manage.py listen`` workers and ``benchtool.py`` producers of
``bench/project``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
PROJECT = BENCH_DIR / "project"
WORK = BENCH_DIR / ".work"
VENVS = BENCH_DIR / ".venvs"
LOGS = WORK / "logs"

#: What the 1.3.1 virtualenv holds. Changing it rebuilds the venv.
THEIRS_REQUIREMENTS = [
    "django-pgpubsub==1.3.1",
    "Django>=5.2,<5.3",
    "django-pgtrigger>=4.11",
    "psycopg[binary]>=3.2.4",
]
THEIRS_VENV = VENVS / "django-pgpubsub-1.3.1"

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class BenchError(RuntimeError):
    """The harness could not run a workload (not a slow or failing library)."""


@dataclasses.dataclass
class Impl:
    """One implementation under test: its interpreter and its database."""

    key: str  # "ours" or "theirs": the settings' BENCH_IMPL
    label: str
    python: Path
    db_url: str

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("DJANGO_SETTINGS_MODULE", None)
        env.update(
            BENCH_IMPL=self.key,
            BENCH_DB_URL=self.db_url,
            BENCH_WORK_DIR=str(WORK),
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        if self.key == "theirs":
            env["PGPUBSUB_USE_PSYCOPG_V3"] = "True"
        return env

    def manage(self, *args: str, timeout: float = 300) -> str:
        return run_checked([str(self.python), str(PROJECT / "manage.py"), *args], self, timeout)

    def tool(self, *args: str, timeout: float = 600) -> dict[str, Any]:
        out = run_checked([str(self.python), str(PROJECT / "benchtool.py"), *args], self, timeout)
        return json.loads(out.strip().splitlines()[-1])

    def tool_process(self, *args: str, log: str) -> subprocess.Popen[str]:
        return spawn([str(self.python), str(PROJECT / "benchtool.py"), *args], self, log)

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.Connection.connect(self.db_url, autocommit=True)


def run_checked(cmd: Sequence[str], impl: Impl, timeout: float) -> str:
    proc = subprocess.run(
        cmd,
        env=impl.env(),
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise BenchError(
            f"{impl.label}: {' '.join(cmd[1:3])} failed ({proc.returncode}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def spawn(cmd: Sequence[str], impl: Impl, log: str) -> subprocess.Popen[str]:
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{impl.key}-{log}.log", "a") as stderr:
        stderr.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n")
        stderr.flush()
        return subprocess.Popen(
            cmd,
            env=impl.env(),
            cwd=PROJECT,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            start_new_session=True,
        )


def stop_process(proc: subprocess.Popen[str], grace: float = 10.0) -> None:
    """SIGTERM its process group, SIGKILL what is left after ``grace`` seconds; reap it."""
    # Each process leads its own session (see spawn), so the whole group goes:
    # django-pgpubsub 1.3.1 replaces a worker that hit an error with a child.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


@contextlib.contextmanager
def workers(
    impl: Impl, channels: Sequence[str], count: int = 1, recover: bool = False
) -> Iterator[list[subprocess.Popen[str]]]:
    """Run ``count`` single-process ``manage.py listen --worker`` workers."""
    cmd = [str(impl.python), str(PROJECT / "manage.py"), "listen", "--worker"]
    cmd += ["--loglevel", "warning", "--channels", *channels]
    if recover:
        cmd.append("--recover")
    procs = [spawn(cmd, impl, "worker") for _ in range(count)]
    try:
        yield procs
    finally:
        for proc in procs:
            stop_process(proc)


# -- the virtualenv of django-pgpubsub 1.3.1 ---------------------------------


def ensure_theirs_venv(say: Any) -> Path:
    """Create (once) the cached virtualenv with django-pgpubsub 1.3.1; return its python."""
    python = THEIRS_VENV / "bin" / "python"
    stamp = THEIRS_VENV / ".requirements"
    wanted = "\n".join(THEIRS_REQUIREMENTS)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    say(f"creating {THEIRS_VENV.relative_to(REPO)} (django-pgpubsub 1.3.1 from PyPI)")
    shutil.rmtree(THEIRS_VENV, ignore_errors=True)
    VENVS.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(THEIRS_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *THEIRS_REQUIREMENTS], check=True)
    stamp.write_text(wanted)
    return python


# -- databases ----------------------------------------------------------------


def server_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if not url:
        raise BenchError(
            "DATABASE_URL is not set: run `make bench` (embedded PostgreSQL) or set it to a "
            "server where databases may be created"
        )
    return url


def database_url(server: str, name: str) -> str:
    return make_conninfo(server, dbname=name)


def drop_database(server: str, name: str) -> None:
    with psycopg.Connection.connect(server, autocommit=True) as conn:
        statement = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(statement.format(sql.Identifier(name)))


def recreate_database(server: str, name: str) -> str:
    """Drop and create database ``name`` on the server; return its conninfo."""
    drop_database(server, name)
    with psycopg.Connection.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_url(server, name)


def server_label(url: str) -> str:
    params = conninfo_to_dict(url)
    host = params.get("host") or "local socket"
    if str(host).startswith("/"):
        return "embedded PostgreSQL (unix socket)"
    return f"{host}:{params.get('port') or 5432}"


def prepare_project(impl: Impl) -> None:
    """Generate the bench app's migrations for ``impl``'s library and migrate its database."""
    package = WORK / f"benchapp_migrations_{impl.key}"
    shutil.rmtree(package, ignore_errors=True)
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    impl.manage("makemigrations", "benchapp", "--noinput")
    impl.manage("migrate", "--noinput")


def truncate(impl: Impl, *tables: str, quiet: bool = True) -> None:
    """Empty ``tables``, then (``quiet``) :func:`settle` the server for a measurement."""
    with impl.connect() as conn:
        existing = [
            t
            for t in tables
            if conn.execute("SELECT to_regclass(%s)", [t]).fetchone()[0] is not None  # type: ignore[index]
        ]
        if existing:
            names = sql.SQL(", ").join(sql.Identifier(t) for t in existing)
            conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(names))
        if quiet:
            settle(conn)


def settle(conn: psycopg.Connection[Any], timeout: float = 60.0) -> None:
    """Let the server go quiet before a measurement.

    Waits (up to ``timeout``) until no autovacuum worker is running on the
    server, in any database, then runs ``CHECKPOINT`` (when the role may):
    the previous measurement's vacuuming and dirty pages are dealt with now,
    not in the middle of the next measurement, which would pay for them on
    these two cores.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
        ).fetchone()
        if not row or not row[0]:
            break
        time.sleep(0.2)
    with contextlib.suppress(psycopg.errors.InsufficientPrivilege):
        conn.execute("CHECKPOINT")


ALL_TABLES = (
    "benchapp_processed",
    "benchapp_broadcastrow",
    "benchapp_durablerow",
    "benchapp_plainrow",
    "benchapp_timedplainrow",
    "benchapp_timedbroadcastrow",
    "benchapp_timeddurablerow",
    "benchapp_timedretainedrow",
    "benchapp_liverow",
    "pgpubsub_notification",
    "pgpubsub_payload",
    # pgpubsub's version 2 event tables (django-pgpubsub 1.3.1 has none).
    "pgpubsub_broadcast",
    "pgpubsub_event",
    "pgpubsub_event_trimmed",
)


# -- waiting for and checking the listeners' work -------------------------------


@dataclasses.dataclass
class Tally:
    """What the listeners wrote for one kind of event."""

    expected: int
    rows: int
    distinct: int
    lost: int
    duplicated: int
    unexpected: int
    first_seen: float | None
    last_seen: float | None
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.unexpected == 0


def tally(impl: Impl, kind: str, expected: int, timed_out: bool = False) -> Tally:
    with impl.connect() as conn:
        row = conn.execute(
            """
            SELECT count(*),
                   count(DISTINCT ref) FILTER (WHERE ref BETWEEN 1 AND %(n)s),
                   count(*) FILTER (WHERE ref NOT BETWEEN 1 AND %(n)s),
                   min(seen_at), max(seen_at)
            FROM benchapp_processed WHERE kind = %(kind)s
            """,
            {"kind": kind, "n": expected},
        ).fetchone()
    assert row is not None
    rows, distinct, unexpected, first, last = row
    return Tally(
        expected=expected,
        rows=rows,
        distinct=distinct,
        lost=expected - distinct,
        duplicated=rows - distinct - unexpected,
        unexpected=unexpected,
        first_seen=first,
        last_seen=last,
        timed_out=timed_out,
    )


def wait_for(
    impl: Impl,
    kind: str,
    expected: int,
    *,
    stall: float,
    deadline: float,
    procs: Sequence[subprocess.Popen[str]] = (),
    tick: Any = None,
) -> Tally:
    """Wait until the listeners handled ``expected`` events of ``kind``.

    Gives up after ``stall`` seconds without progress or ``deadline`` seconds
    in all (then the tally says ``timed_out``), or when a worker has died.
    """
    started = time.monotonic()
    last_count = -1
    last_progress = started
    with impl.connect() as conn:
        while True:
            count = conn.execute(
                "SELECT count(*) FROM benchapp_processed WHERE kind = %s", [kind]
            ).fetchone()[0]  # type: ignore[index]
            now = time.monotonic()
            if tick is not None:
                tick(count, expected)
            if count >= expected:
                break
            if count != last_count:
                last_count, last_progress = count, now
            dead = [p for p in procs if p.poll() is not None]
            if dead or now - last_progress > stall or now - started > deadline:
                return tally(impl, kind, expected, timed_out=True)
            time.sleep(0.1)
    time.sleep(0.3)  # a duplicate arriving late should still be counted
    return tally(impl, kind, expected)


# -- process accounting -----------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wait_idle(pid: int, quiet: float = 0.5, timeout: float = 10.0) -> None:
    """Wait until ``pid`` has used no CPU for ``quiet`` seconds, or ``timeout`` has passed."""
    deadline = time.monotonic() + timeout
    last_cpu, last_change = cpu_seconds(pid), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        cpu = cpu_seconds(pid)
        if cpu != last_cpu:
            last_cpu, last_change = cpu, time.monotonic()
        elif time.monotonic() - last_change >= quiet:
            return


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as fh:
        return int(fh.read().split()[1]) * PAGE_SIZE


class RssSampler:
    """Samples a process's resident memory in a thread: (time.time(), bytes)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.time(), rss_bytes(self.pid)))
            except (FileNotFoundError, ProcessLookupError, ValueError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100), linear interpolation between ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)
