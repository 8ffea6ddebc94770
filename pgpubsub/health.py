"""Health checks: the worker's ``/healthz`` and ``/readyz`` routes.

``listen --health-port PORT`` serves, from a thread of the worker process
(through :mod:`pgpubsub.endpoints`):

``GET /healthz``
    Liveness: 200 while the process runs and answers HTTP.
``GET /readyz``
    Readiness: 200 only while the worker's LISTEN connection is up (as
    reported through :meth:`pgpubsub.observe.Observer.connection_changed`)
    *and* the database answers ``SELECT 1`` within ``timeout`` seconds on a
    separate short-lived connection (:func:`pgpubsub.probes.ping`); 503
    otherwise. The body is a JSON object saying which part failed.

``python manage.py pgpubsub health`` checks from the outside with
:mod:`pgpubsub.probes`: the database answers and at least ``--min-workers``
worker LISTEN sessions are connected to it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .observe import Observer
from .probes import DEFAULT_PROBE_TIMEOUT, ping

if TYPE_CHECKING:
    from .opsserver import Response, Route


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
        """The routes, for :class:`pgpubsub.opsserver.OpsServer`."""
        return {"/healthz": self.liveness, "/readyz": self.readiness}
