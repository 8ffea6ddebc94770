"""End to end: operating the worker — supervisor, signals, health, metrics, logs.

Workers run as ``manage.py listen`` subprocesses against the test database.
A listener is made to "work" for as long as a test wants by holding a lock
that blocks the ``Delivery`` insert every test listener makes; tests wait
for the worker's session to be seen waiting on that lock, never on a timer.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
from django.core.management import call_command
from django.db import connection
from prometheus_client.parser import text_string_to_metric_families

import pgpubsub
from pgpubsub.health import HealthCheck, HealthState
from pgpubsub.opsserver import OpsServer
from pgpubsub.probes import probe_params
from tests.app.channels import DurableGreeting, Greeting, OrderChannel
from tests.app.models import Delivery, Order
from tests.conftest import REPO, WorkerProcess, db_url, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LINUX = sys.platform.startswith("linux")


# -- helpers ---------------------------------------------------------------------


def worker_sessions() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'pgpubsub-worker'"
        )
        return cursor.fetchone()[0]


@pytest.fixture(autouse=True)
def no_worker_left_from_earlier_tests(transactional_db: None) -> None:
    """Sessions of stopped workers leave pg_stat_activity a moment after the process."""
    wait_for(lambda: worker_sessions() == 0, what="earlier tests' worker sessions to end")


def keys(listener: str) -> list[str]:
    return list(Delivery.objects.filter(listener=listener).values_list("key", flat=True))


def wait_deliveries(listener: str, count: int, timeout: float = 20.0) -> None:
    wait_for(
        lambda: Delivery.objects.filter(listener=listener).count() >= count,
        timeout,
        what=f"{count} deliveries to {listener}",
    )


@contextlib.contextmanager
def deliveries_blocked() -> Iterator[None]:
    """Make every listener's Delivery insert wait until the block exits."""
    conn = psycopg.connect(db_url())
    try:
        conn.execute("LOCK TABLE app_delivery IN SHARE MODE")
        yield
    finally:
        conn.rollback()
        conn.close()


def sessions_waiting_on_a_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


def wait_blocked(count: int) -> None:
    wait_for(
        lambda: sessions_waiting_on_a_lock() >= count,
        what=f"{count} worker session(s) waiting on the Delivery lock",
    )


def children(worker: WorkerProcess) -> list[psutil.Process]:
    try:
        return psutil.Process(worker.proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def session_members(sid: int) -> list[int]:
    """Live processes of the session ``sid`` (the worker fixture starts one per worker)."""
    found = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError):
            if os.getsid(pid) == sid and alive(pid):
                found.append(pid)
    return found


def served_urls(worker: WorkerProcess, route: str, count: int = 1) -> list[str]:
    """The URLs at which the worker(s) logged serving ``route``."""
    pattern = re.compile(r"serving (\S.*?) on (http://\S+)")

    def urls() -> list[str]:
        found = []
        for line in worker.output.splitlines():
            match = pattern.search(line)
            if match and route in match.group(1):
                found.append(match.group(2) + route)
        return found

    wait_for(lambda: len(urls()) >= count, what=f"{count} server(s) of {route}")
    return urls()


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def free_port_range(count: int) -> int:
    """A port P such that P … P+count-1 are free right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65536:
            continue
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    sock = stack.enter_context(socket.socket())
                    sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise AssertionError(f"no {count} consecutive free ports")


class ScriptProcess(WorkerProcess):
    """A Python script run like the worker fixture runs ``listen``: own session, output kept."""

    def __init__(self, script: str) -> None:
        self.args = ["python", "-c", "..."]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()


def run_command(*args: str) -> tuple[int, str]:
    """``manage.py pgpubsub ARGS`` in this process; (exit status, stdout + stderr)."""
    out = io.StringIO()
    try:
        call_command("pgpubsub", *args, stdout=out, stderr=out)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue()
    return 0, out.getvalue()


# -- supervisor and signals --------------------------------------------------------


def test_killed_worker_is_replaced_and_sigterm_leaves_no_process(start_worker):
    supervisor = start_worker("--processes", "2", ready=False)
    supervisor.wait_ready(count=2)
    first = wait_for(lambda: len(children(supervisor)) == 2 and children(supervisor))
    victim = first[0].pid
    os.kill(victim, signal.SIGKILL)

    supervisor.wait_for_output(f"(pid {victim}) exited with signal SIGKILL; restarting in")
    supervisor.wait_ready(count=3)
    current = {child.pid for child in children(supervisor)}
    assert len(current) == 2 and victim not in current

    # Both workers serve: each gets every broadcast, and durable ones are
    # processed exactly once between them.
    pgpubsub.notify(Greeting, message="after the kill")
    for i in range(20):
        pgpubsub.notify(DurableGreeting, message=f"d{i}")
    wait_deliveries("greet", 2)
    wait_deliveries("durable_greet", 20)
    assert keys("greet") == ["after the kill"] * 2
    assert sorted(keys("durable_greet")) == sorted(f"d{i}" for i in range(20))

    session = supervisor.proc.pid
    members = session_members(session)
    assert set(members) == {session, *current}
    supervisor.signal(signal.SIGTERM)
    assert supervisor.proc.wait(15) == 0
    wait_for(lambda: not session_members(session), what="every process of the session to exit")
    supervisor.stop()  # collects the rest of the output
    for pid in current:
        assert f"worker {pid} stopped" in supervisor.output
    assert "supervisor stopped" in supervisor.output


def test_shutdown_timeout_bounds_the_wait_for_busy_workers(start_worker):
    supervisor = start_worker("--processes", "2", "--shutdown-timeout", "1", ready=False)
    supervisor.wait_ready(count=2)
    workers = [child.pid for child in children(supervisor)]
    with deliveries_blocked():
        pgpubsub.notify(Greeting, message="stuck")
        wait_blocked(2)  # a broadcast: both workers are in the listener
        started = time.monotonic()
        supervisor.signal(signal.SIGINT)
        assert supervisor.proc.wait(15) == 0
        waited = time.monotonic() - started
        # It gave the workers their second, then killed them.
        assert 1.0 <= waited < 10
        supervisor.stop()  # collects the rest of the output
        assert supervisor.output.count("did not stop in time; killing it") == 2
        for pid in workers:
            wait_for(lambda pid=pid: not alive(pid), what=f"worker {pid} to be gone")
        assert not session_members(supervisor.proc.pid)


@pytest.mark.skipif(not LINUX, reason="the parent-death signal is Linux-only")
def test_workers_stop_when_the_supervisor_is_killed(start_worker):
    supervisor = start_worker("--processes", "2", ready=False)
    supervisor.wait_ready(count=2)
    workers = [child.pid for child in children(supervisor)]
    supervisor.signal(signal.SIGKILL)
    supervisor.proc.wait(10)
    for pid in workers:
        # SIGTERM from the kernel: a graceful stop, not a crash. (The
        # fixture's wait_for_output gives up once the supervisor is gone.)
        wait_for(lambda pid=pid: f"worker {pid} stopped" in supervisor.output)
        wait_for(lambda pid=pid: not alive(pid), what=f"worker {pid} to exit")


def test_a_worker_that_keeps_dying_is_restarted_with_growing_delays():
    script = textwrap.dedent(
        """
        import logging, sys
        from pgpubsub.supervisor import Supervisor
        logging.basicConfig(level="INFO", format="%(message)s", stream=sys.stdout)
        crash = [sys.executable, "-c", "raise SystemExit(3)"]
        sys.exit(Supervisor(crash, 1, backoff_first=0.1, backoff_max=0.8).run())
        """
    )
    proc = ScriptProcess(script)
    try:
        proc.wait_for_output("restarting in 0.8s", count=2)
        proc.signal(signal.SIGTERM)
        assert proc.proc.wait(10) == 0
    finally:
        proc.stop()
    delays = [float(d) for d in re.findall(r"exit status 3; restarting in ([\d.]+)s", proc.output)]
    assert delays[:5] == [0.1, 0.2, 0.4, 0.8, 0.8]


def wake_ups(pids: list[int]) -> int:
    """Context switches of every thread of these processes so far (Linux /proc)."""
    total = 0
    for pid in pids:
        for status in Path(f"/proc/{pid}/task").glob("*/status"):
            for line in status.read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


@pytest.mark.skipif(not LINUX, reason="counts context switches in /proc")
def test_idle_supervisor_and_workers_do_not_wake_up(start_worker):
    # Broadcast channels only: a durable channel is polled every
    # PGPUBSUB_POLL_INTERVAL seconds by design, and so is the key of a worker
    # that relies on another one's (pgpubsub.wakeups): a long interval here.
    supervisor = start_worker(
        "--processes",
        "2",
        "--channels",
        "tests.app.channels.Greeting",
        "--health-port",
        "0",
        "--metrics-port",
        "0",
        ready=False,
        extra_env={"PGPUBSUB_TEST_POLL_INTERVAL": "60"},
    )
    supervisor.wait_ready(count=2)
    served_urls(supervisor, "/metrics", count=2)
    pids = [supervisor.proc.pid, *(child.pid for child in children(supervisor))]

    def settled() -> bool:
        # The end of start-up (the HTTP thread that served /metrics, the
        # worker's last reads before it sleeps) may straggle past "ready":
        # wait for a moment without a single context switch first.
        start = wake_ups(pids)
        time.sleep(0.5)
        return wake_ups(pids) == start

    wait_for(settled, timeout=20, what="the supervisor and workers to settle after start-up")
    before = wake_ups(pids)
    # A measurement window, not a synchronisation: nothing should happen in it.
    time.sleep(2)
    assert wake_ups(pids) - before <= 3


def test_worker_finishes_its_notification_before_exiting_on_sigterm(start_worker):
    worker = start_worker("--worker")
    with deliveries_blocked():
        pgpubsub.notify(Greeting, message="in hand")
        wait_blocked(1)
        worker.signal(signal.SIGTERM)
        # Still busy with the notification: it must not leave yet.
        with pytest.raises(subprocess.TimeoutExpired):
            worker.proc.wait(0.5)
    assert worker.proc.wait(15) == 0
    assert keys("greet") == ["in hand"]
    assert keys("greet_second") == ["in hand"]


# -- health ------------------------------------------------------------------------


def test_health_endpoints_and_command_under_a_supervisor(start_worker):
    port = free_port_range(2)
    supervisor = start_worker("--processes", "2", "--health-port", str(port), ready=False)
    supervisor.wait_ready(count=2)
    urls = sorted(served_urls(supervisor, "/readyz", count=2))
    assert urls == [f"http://127.0.0.1:{port}/readyz", f"http://127.0.0.1:{port + 1}/readyz"]
    for url in urls:
        _, body = wait_for(lambda url=url: (r := http_get(url))[0] == 200 and r)
        assert json.loads(body)["listen_connection"] == "up"
        assert json.loads(body)["database"] == "ok"
    assert http_get(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
    assert http_get(f"http://127.0.0.1:{port}/nothing")[0] == 404

    code, out = run_command("health", "--min-workers", "2")
    assert code == 0, out
    assert "2 worker LISTEN session(s) connected" in out
    assert run_command("health", "--min-workers", "3")[0] == 1

    supervisor.signal(signal.SIGTERM)
    assert supervisor.proc.wait(15) == 0
    assert http_get(urls[0])[0] == 0  # nobody listens any more
    wait_for(lambda: run_command("health")[0] == 1, what="health to fail without workers")
    assert "0 worker LISTEN session(s) connected" in run_command("health")[1]


def test_readiness_follows_the_listen_connection_and_the_database():
    state = HealthState()
    params = probe_params("default")
    server = OpsServer("127.0.0.1", 0, HealthCheck(state, params).routes()).start()
    unreachable = {**params, "host": "127.0.0.1", "port": 1}
    broken = OpsServer("127.0.0.1", 0, HealthCheck(state, unreachable).routes()).start()
    try:
        status, body = http_get(server.url + "/readyz")
        assert status == 503
        assert json.loads(body)["listen_connection"] == "down"
        state.connection_changed(True)
        status, body = http_get(server.url + "/readyz")
        assert (status, json.loads(body)["status"]) == (200, "ready")
        status, body = http_get(broken.url + "/readyz")
        assert status == 503
        assert json.loads(body)["database"].startswith("error:")
        assert http_get(broken.url + "/healthz")[0] == 200  # alive, though not ready
        state.connection_changed(False)
        assert http_get(server.url + "/readyz")[0] == 503
    finally:
        server.stop()
        broken.stop()


def _embedded_server() -> bool:
    pgdata = os.environ.get("PGPUBSUB_EMBEDDED_PGDATA")
    if not pgdata:
        return False
    from tools import pgserver

    return pgserver.status_url(pgdata) == os.environ.get("DATABASE_URL")


@pytest.mark.skipif(
    not _embedded_server(),
    reason="needs the embedded PostgreSQL of `make test` (it is stopped and restarted)",
)
def test_health_fails_while_postgresql_is_stopped_and_passes_after_restart(start_worker):
    from tools import pgserver

    worker = start_worker("--worker", "--health-port", "0")
    [url] = served_urls(worker, "/readyz")
    wait_for(lambda: http_get(url)[0] == 200, what="readiness")
    assert run_command("health")[0] == 0

    pgserver.stop(os.environ["PGPUBSUB_EMBEDDED_PGDATA"])
    try:
        _, body = wait_for(lambda: (r := http_get(url))[0] == 503 and r, what="503")
        assert json.loads(body)["database"].startswith("error:")
        code, out = run_command("health")
        assert code == 1 and "UNHEALTHY: cannot reach database" in out
        worker.wait_for_output("database connection lost")
        assert http_get(url.replace("/readyz", "/healthz"))[0] == 200
    finally:
        pgserver.start(os.environ["PGPUBSUB_EMBEDDED_PGDATA"])
        connection.close()  # the test's own connection died with the server

    _, body = wait_for(lambda: (r := http_get(url))[0] == 200 and r, 60, what="ready again")
    assert json.loads(body)["listen_connection"] == "up"
    assert run_command("health")[0] == 0
    pgpubsub.notify(Greeting, message="after restart")
    wait_deliveries("greet", 1)


# -- metrics -----------------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = http_get(url)
    assert status == 200, text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_metrics_count_known_traffic(start_worker):
    worker = start_worker(
        "--worker",
        "--metrics-port",
        "0",
        "--channels",
        "tests.app.channels.Greeting",
        "tests.app.channels.OrderChannel",
        extra_env={"PGPUBSUB_TEST_BROKEN_LISTENER": "1"},  # orders named "broken…" fail
    )
    [url] = served_urls(worker, "/metrics")
    greeting, order = Greeting.name(), OrderChannel.name()
    before = scrape(url)
    assert value(before, "pgpubsub_notifications_received_total", channel=greeting) == 0
    assert value(before, "pgpubsub_worker_connected") == 1

    with connection.cursor() as cursor:  # a malformed message counts as failed, listener "-"
        cursor.execute("SELECT pg_notify(%s, 'not json')", [Greeting.listen_safe_name()])
    for message in ("one", "two", "boom"):
        pgpubsub.notify(Greeting, message=message)
    Order.objects.create(reference="fine")
    Order.objects.create(reference="broken-metrics")
    pgpubsub.notify(DurableGreeting, message="waits")  # no worker serves it here
    pgpubsub.notify(DurableGreeting, message="waits too")

    def settled() -> dict | None:
        samples = scrape(url)
        done = (
            value(samples, "pgpubsub_notifications_processed_total", channel=greeting) == 3
            and value(samples, "pgpubsub_notifications_processed_total", channel=order) == 1
            and value(samples, "pgpubsub_notifications_dead_lettered_total", channel=order) == 1
        )
        return samples if done else None

    samples = wait_for(settled, what="the traffic to be counted")
    failed = "pgpubsub_notifications_failed_total"
    assert value(samples, "pgpubsub_notifications_received_total", channel=greeting) == 3
    assert value(samples, failed, channel=greeting, listener="tests.app.listeners.greet") == 1
    assert (
        value(samples, failed, channel=greeting, listener="tests.app.listeners.greet_second") == 0
    )
    assert value(samples, failed, channel=greeting, listener="-") == 1
    assert value(samples, "pgpubsub_notification_latency_seconds_count", channel=greeting) == 3
    assert value(samples, "pgpubsub_listener_duration_seconds_count", channel=greeting) == 3
    assert value(samples, "pgpubsub_notification_latency_seconds_sum", channel=greeting) > 0
    # Durable: one success; one failure tried 3 times (PGPUBSUB_MAX_ATTEMPTS), then dead.
    assert value(samples, "pgpubsub_notifications_received_total", channel=order) == 4
    assert value(samples, failed, channel=order, listener="tests.app.listeners.order_created") == 3
    assert value(samples, "pgpubsub_notifications_retried_total", channel=order) == 2
    # Read from the database at scrape time.
    assert value(samples, "pgpubsub_database_up") == 1
    assert value(samples, "pgpubsub_dead_letters", channel=order) == 1
    assert value(samples, "pgpubsub_backlog_notifications", channel=order) == 0
    assert value(samples, "pgpubsub_backlog_notifications", channel=DurableGreeting.name()) == 2
    assert value(samples, "pgpubsub_backlog_oldest_age_seconds", channel=DurableGreeting.name()) > 0
    assert value(samples, "pgpubsub_workers_connected") == 1
    assert 0 <= value(samples, "pgpubsub_notify_queue_usage") < 0.01
    assert value(samples, "process_cpu_seconds_total") is not None  # the default collectors


# -- logs --------------------------------------------------------------------------


def test_json_logs_are_one_object_per_line_with_channel_and_listener(start_worker):
    worker = start_worker("--worker", "--logformat", "json")
    pgpubsub.notify(Greeting, message="boom")
    worker.wait_for_output("the greeting listener refuses 'boom'")
    assert worker.stop() == 0
    records = [json.loads(line) for line in worker.output.splitlines() if line.strip()]
    assert all(isinstance(record, dict) for record in records)
    assert any("ready, listening on" in record["message"] for record in records)
    [failure] = [r for r in records if r.get("listener") == "tests.app.listeners.greet"]
    assert failure["channel"] == "tests.app.channels.Greeting"
    assert failure["level"] == "error"
    assert "ValueError: the greeting listener refuses 'boom'" in failure["exception"]
