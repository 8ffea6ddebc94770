"""The worker's HTTP endpoints: health and metrics routes on an ops server.

``manage.py listen --health-port``/``--metrics-port`` wrap the worker in
:func:`serve_endpoints`. This module is the only one that brings
:mod:`pgpubsub.health`, :mod:`pgpubsub.metrics` and
:mod:`pgpubsub.opsserver` together, so none of them imports another.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from django.core.exceptions import ImproperlyConfigured

from .health import HealthCheck, HealthState
from .metrics import PrometheusObserver, install
from .observe import Observer, add_observer, remove_observer
from .opsserver import OpsServer, Route
from .probes import DEFAULT_PROBE_TIMEOUT, probe_params

logger = logging.getLogger("pgpubsub")


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
    params = probe_params(using, timeout)
    by_address: dict[tuple[str, int], dict[str, Route]] = {}
    added: list[Observer] = []
    if health is not None:
        state = HealthState()
        added.append(state)
        by_address.setdefault(health, {}).update(HealthCheck(state, params, timeout).routes())
    if metrics is not None:
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
