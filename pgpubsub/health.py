"""Health checks: the worker's HTTP endpoints and database probes.

``listen --health-port PORT`` serves, from a thread of the worker process:

``GET /healthz``
    Liveness: 200 while the process runs and answers HTTP.
``GET /readyz``
    Readiness: 200 only while the worker's LISTEN connection is up (as
    reported through :meth:`pgpubsub.observe.Observer.connection_changed`)
    *and* the database answers ``SELECT 1`` within ``timeout`` seconds on a
    separate short-lived connection; 503 otherwise. The body is a JSON object
    saying which part failed.

``python manage.py pgpubsub health`` checks from the outside: the database
answers and at least ``--min-workers`` worker LISTEN sessions are connected
to it (found in ``pg_stat_activity`` by their ``application_name``).

The probes open their own psycopg connection (with ``connect_timeout`` and
``statement_timeout``) rather than use Django's: Django connections belong
to a thread, and a probe must fail fast instead of hanging when the server
is unreachable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psycopg
from django.core.exceptions import ImproperlyConfigured

from .observe import Observer
from .selfpipe import Waker
from .worker import conninfo_params

logger = logging.getLogger("pgpubsub")

#: The ``application_name`` of the connections opened by health and metrics probes.
PROBE_APPLICATION_NAME = "pgpubsub-probe"

#: Default seconds a probe may take to connect and answer.
DEFAULT_PROBE_TIMEOUT = 2.0

#: What an HTTP route returns: status code, content type, body.
Response = tuple[int, str, bytes]
Route = Callable[[], Response]

WORKERS_SQL = """
SELECT pid, client_addr::text, backend_start, state
FROM pg_stat_activity
WHERE application_name = %s AND datname = current_database() AND pid <> pg_backend_pid()
ORDER BY backend_start
"""


def probe_params(using: str, timeout: float = DEFAULT_PROBE_TIMEOUT) -> dict[str, Any]:
    """psycopg connection parameters for a probe of the Django database ``using``.

    Call it in the main thread: it reads Django's connection settings.
    """
    params = conninfo_params(using)
    params["application_name"] = PROBE_APPLICATION_NAME
    # libpq counts connect_timeout in whole seconds and treats 1 as 2.
    params["connect_timeout"] = max(2, math.ceil(timeout))
    return params


def worker_application_name(using: str) -> str:
    """The ``application_name`` with which the workers of ``using`` connect."""
    return str(conninfo_params(using)["application_name"])


@contextlib.contextmanager
def probe_connection(
    params: Mapping[str, Any], timeout: float = DEFAULT_PROBE_TIMEOUT
) -> Iterator[psycopg.Connection[Any]]:
    """A short-lived autocommit connection whose statements time out after ``timeout`` s."""
    conn = psycopg.connect(**params, autocommit=True)
    try:
        conn.execute(
            "SELECT set_config('statement_timeout', %s, false)",
            [str(max(1, int(timeout * 1000)))],
        )
        yield conn
    finally:
        conn.close()


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def ping(params: Mapping[str, Any], timeout: float = DEFAULT_PROBE_TIMEOUT) -> str | None:
    """Run ``SELECT 1``; return None when the database answered, else the error."""
    try:
        with probe_connection(params, timeout) as conn:
            conn.execute("SELECT 1").fetchone()
    except psycopg.Error as exc:
        return _error_text(exc)
    return None


def connected_workers(conn: psycopg.Connection[Any], application_name: str) -> list[dict[str, Any]]:
    """The worker LISTEN sessions connected to the current database."""
    rows = conn.execute(WORKERS_SQL, [application_name]).fetchall()
    return [
        {"pid": pid, "client_addr": addr, "backend_start": started, "state": state}
        for pid, addr, started, state in rows
    ]


class HealthState(Observer):
    """Follows the worker's LISTEN connection, for the readiness endpoint."""

    def __init__(self) -> None:
        self.connected = False
        self.changed_at = time.time()

    def connection_changed(self, connected: bool) -> None:
        self.connected = connected
        self.changed_at = time.time()


class HealthCheck:
    """The ``/healthz`` and ``/readyz`` routes of one worker."""

    def __init__(
        self, state: HealthState, params: Mapping[str, Any], timeout: float = DEFAULT_PROBE_TIMEOUT
    ) -> None:
        self.state = state
        self.params = dict(params)
        self.timeout = timeout

    def liveness(self) -> Response:
        return 200, "text/plain; charset=utf-8", b"ok\n"

    def readiness(self) -> Response:
        # One reading of the state for the whole answer: the worker may
        # reconnect while the database is pinged.
        connected, changed_at = self.state.connected, self.state.changed_at
        since = round(time.time() - changed_at, 3)
        listen = "up" if connected else "down"
        error = ping(self.params, self.timeout)
        ready = connected and error is None
        body = {
            "status": "ready" if ready else "unavailable",
            "listen_connection": listen,
            "listen_connection_since_seconds": since,
            "database": "ok" if error is None else f"error: {error}",
        }
        data = (json.dumps(body) + "\n").encode()
        return (200 if ready else 503), "application/json", data

    def routes(self) -> dict[str, Route]:
        return {"/healthz": self.liveness, "/readyz": self.readiness}


class _Handler(BaseHTTPRequestHandler):
    server: OpsServer
    protocol_version = "HTTP/1.0"

    def _respond(self, with_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        route = self.server.routes.get(path)
        if route is None:
            known = ", ".join(sorted(self.server.routes))
            status, ctype, body = 404, "text/plain; charset=utf-8", f"try {known}\n".encode()
        else:
            try:
                status, ctype, body = route()
            except Exception:
                logger.exception("pgpubsub: the %s endpoint failed", path)
                status, ctype, body = 500, "text/plain; charset=utf-8", b"internal error\n"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._respond(with_body=True)

    def do_HEAD(self) -> None:
        self._respond(with_body=False)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("pgpubsub: http %s " + format, self.client_address[0], *args)


class OpsServer(ThreadingHTTPServer):
    """A small HTTP server for health and metrics, run in a daemon thread.

    Its thread blocks on the listening socket and a wake-up pipe, with no
    timeout: an idle worker's HTTP thread never wakes up (``serve_forever``
    would, twice a second).
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: str, port: int, routes: Mapping[str, Route]) -> None:
        self.routes = dict(routes)
        super().__init__((addr, port), _Handler)
        # handle_request() is only called once the socket is readable.
        self.timeout = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._waker = Waker()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def _serve(self) -> None:
        listening = self.fileno()
        while not self._stopping:
            if self._waker.wait([listening]) and not self._stopping:
                self.handle_request()

    def start(self) -> OpsServer:
        self._thread = threading.Thread(
            target=self._serve, name=f"pgpubsub-http-{self.server_address[1]}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self._waker.wake()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self.server_close()
        self._waker.close()


@contextlib.contextmanager
def serve_endpoints(
    *,
    using: str,
    health: tuple[str, int] | None = None,
    metrics: tuple[str, int] | None = None,
    timeout: float = DEFAULT_PROBE_TIMEOUT,
) -> Iterator[list[OpsServer]]:
    """Serve the health and/or metrics endpoints while the block runs.

    ``health`` and ``metrics`` are ``(address, port)``; both on the same
    address and port share one server. The observers they need are
    registered for the duration of the block.
    """
    from .observe import add_observer, remove_observer

    params = probe_params(using, timeout)
    by_address: dict[tuple[str, int], dict[str, Route]] = {}
    added: list[Observer] = []
    if health is not None:
        state = HealthState()
        added.append(state)
        by_address.setdefault(health, {}).update(HealthCheck(state, params, timeout).routes())
    if metrics is not None:
        from .metrics import PrometheusObserver, install

        observer: PrometheusObserver = install(using=using, timeout=timeout)
        added.append(observer)
        by_address.setdefault(metrics, {}).update(observer.routes())
    servers: list[OpsServer] = []
    try:
        for (addr, port), routes in by_address.items():
            try:
                server = OpsServer(addr, port, routes)
            except OSError as exc:
                raise ImproperlyConfigured(
                    f"cannot serve {', '.join(sorted(routes))} on {addr}:{port}: {exc}"
                ) from exc
            servers.append(server.start())
            logger.info("pgpubsub: serving %s on %s", ", ".join(sorted(routes)), server.url)
        for observer_ in added:
            add_observer(observer_)
        yield servers
    finally:
        for observer_ in added:
            remove_observer(observer_)
        for server in servers:
            server.stop()
