"""Prometheus metrics for the worker (``listen --metrics-port PORT``).

Needs the optional ``prometheus-client`` dependency::

    pip install 'pgpubsub-django[metrics]'

:class:`PrometheusObserver` counts what the worker does, through the
:class:`pgpubsub.observe.Observer` hooks. :class:`DatabaseCollector` reads
the state of the database at scrape time, on a probe connection
(:mod:`pgpubsub.probes`): durable backlog, dead letters, worker sessions and
the NOTIFY queue. Both are registered in the same registry and served at
``/metrics`` by :func:`pgpubsub.endpoints.serve_endpoints`.

Every series is labelled with the channel's dotted path (``channel``), and
failures also with the listener's dotted path (``listener``; ``"-"`` when the
payload could not be decoded, before any listener ran).

Other monitoring systems (OpenTelemetry, StatsD, …) can receive the same
events by registering their own :class:`~pgpubsub.observe.Observer` with
:func:`pgpubsub.observe.add_observer`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

from . import conf, store
from .channel import BaseChannel, channel_names
from .models import NotificationState
from .observe import Observer
from .probes import (
    probe_connection,
    probe_params,
    run,
    server_status,
    worker_application_name,
    worker_sessions,
)
from .registry import listeners_for
from .registry import registry as listener_registry

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric

    from .opsserver import Route

logger = logging.getLogger("pgpubsub")

#: Histogram buckets (seconds) for listener durations and end-to-end latencies.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

#: Label value of failures that happened before any listener ran (undecodable payload).
NO_LISTENER = "-"


def prometheus() -> ModuleType:
    """Import ``prometheus_client``, or fail saying which extra to install."""
    try:
        import prometheus_client
    except ImportError as exc:
        raise ImproperlyConfigured(
            "pgpubsub metrics need the prometheus-client package: "
            "pip install 'pgpubsub-django[metrics]'"
        ) from exc
    return prometheus_client


#: The worker's series: attribute of the observer, metric type, name (after
#: ``pgpubsub_``), description, labels.
_SERIES: list[tuple[str, str, str, str, list[str]]] = [
    (
        "received_total",
        "Counter",
        "notifications_received",
        "Events received by the worker (from a NOTIFY or claimed from the outbox).",
        ["channel"],
    ),
    (
        "processed_total",
        "Counter",
        "notifications_processed",
        "Events whose listeners have run (durable: succeeded; broadcast: all, failed or not).",
        ["channel"],
    ),
    (
        "failed_total",
        "Counter",
        "notifications_failed",
        'Listener failures (an exception, or an undecodable payload: listener="-").',
        ["channel", "listener"],
    ),
    (
        "retried_total",
        "Counter",
        "notifications_retried",
        "Durable notifications that failed and were scheduled for another attempt.",
        ["channel"],
    ),
    (
        "dead_lettered_total",
        "Counter",
        "notifications_dead_lettered",
        "Durable notifications that used up their attempts.",
        ["channel"],
    ),
    (
        "latency",
        "Histogram",
        "notification_latency_seconds",
        "Seconds from publication (commit of the writer) to completion of the listeners.",
        ["channel"],
    ),
    (
        "duration",
        "Histogram",
        "listener_duration_seconds",
        "Seconds the listeners of one event ran.",
        ["channel"],
    ),
    (
        "connected",
        "Gauge",
        "worker_connected",
        "1 while the worker's LISTEN connection is up, else 0.",
        [],
    ),
    (
        "connection_losses_total",
        "Counter",
        "worker_connection_losses",
        "Times the worker lost its LISTEN connection and had to reconnect.",
        [],
    ),
]


class PrometheusObserver(Observer):
    """Counts the worker's events into Prometheus metrics.

    ``registry`` defaults to prometheus-client's global registry (which also
    carries the process and platform collectors and any metric your own code
    defines); a registry can hold only one observer. ``channels`` are
    pre-declared with zero counts, so that rates exist before the first event.
    The metrics are the attributes named in ``_SERIES``.
    """

    received_total: Counter
    processed_total: Counter
    failed_total: Counter
    retried_total: Counter
    dead_lettered_total: Counter
    latency: Histogram
    duration: Histogram
    connected: Gauge
    connection_losses_total: Counter

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        channels: Iterable[type[BaseChannel]] = (),
    ) -> None:
        client = prometheus()
        self.registry = registry if registry is not None else client.REGISTRY
        kw: dict[str, Any] = {"registry": self.registry, "namespace": "pgpubsub"}
        for attribute, kind, name, documentation, labels in _SERIES:
            extra = {"buckets": BUCKETS} if kind == "Histogram" else {}
            metric = getattr(client, kind)(name, documentation, labels, **extra, **kw)
            setattr(self, attribute, metric)
        for channel in channels:
            name = channel.name()
            for attribute, _kind, _name, _documentation, labels in _SERIES:
                if labels == ["channel"]:
                    getattr(self, attribute).labels(name)
            for listener in listeners_for(channel):
                self.failed_total.labels(name, listener.name)
        self._was_connected = False

    # -- Observer hooks (called in the worker's thread) ----------------------

    def connection_changed(self, connected: bool) -> None:
        self.connected.set(1 if connected else 0)
        if self._was_connected and not connected:
            self.connection_losses_total.inc()
        self._was_connected = connected

    def received(self, channel: str, count: int) -> None:
        self.received_total.labels(channel).inc(count)

    def processed(self, channel: str, duration: float, latency: float | None) -> None:
        self.processed_total.labels(channel).inc()
        self.duration.labels(channel).observe(duration)
        if latency is not None:
            self.latency.labels(channel).observe(max(0.0, latency))

    def failed(self, channel: str, listener: str | None) -> None:
        self.failed_total.labels(channel, listener or NO_LISTENER).inc()

    def retried(self, channel: str) -> None:
        self.retried_total.labels(channel).inc()

    def dead_lettered(self, channel: str) -> None:
        self.dead_lettered_total.labels(channel).inc()

    # -- exposition -----------------------------------------------------------

    def exposition(self, accept: str | None = None) -> tuple[str, bytes]:
        """The content type and text of a scrape of the registry."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        return content_type, encoder(self.registry)

    def routes(self) -> dict[str, Route]:
        """The ``/metrics`` route for :class:`pgpubsub.opsserver.OpsServer`."""

        def metrics() -> tuple[int, str, bytes]:
            content_type, body = self.exposition()
            return 200, content_type, body

        return {"/metrics": metrics}


class DatabaseCollector:
    """Gauges read from the database at each scrape, on a short-lived connection.

    ``params`` are psycopg connection parameters (see
    :func:`pgpubsub.probes.probe_params`). When the database cannot be read,
    ``pgpubsub_database_up`` is 0 and the database gauges are left out, so
    the scrape itself still succeeds.
    """

    def __init__(
        self,
        params: Mapping[str, Any],
        *,
        worker_application_name: str = "pgpubsub-worker",
        timeout: float = 2.0,
    ) -> None:
        self.params = dict(params)
        self.worker_application_name = worker_application_name
        self.timeout = timeout

    def describe(self) -> list[Metric]:
        # Declaring nothing keeps the registry from running a collection (and
        # a database query) when the collector is registered.
        return []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        started = time.monotonic()
        up = GaugeMetricFamily(
            "pgpubsub_database_up", "1 if the last scrape could query the database, else 0."
        )
        try:
            with probe_connection(self.params, self.timeout) as conn:
                backlog: list[store.BacklogRow] = run(conn, store.backlog())
                _database, _version, usage_value = run(conn, server_status())
                workers_count = len(run(conn, worker_sessions(self.worker_application_name)))
        except Exception as exc:  # a scrape must not fail because the database does
            logger.warning("pgpubsub: metrics could not query the database: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        names = channel_names()
        pending = GaugeMetricFamily(
            "pgpubsub_backlog_notifications",
            "Durable notifications waiting to be processed (including those awaiting a retry).",
            labels=["channel"],
        )
        oldest = GaugeMetricFamily(
            "pgpubsub_backlog_oldest_age_seconds",
            "Age of the oldest pending durable notification.",
            labels=["channel"],
        )
        dead = GaugeMetricFamily(
            "pgpubsub_dead_letters", "Dead-lettered durable notifications.", labels=["channel"]
        )
        pending_by: dict[str, float] = {}
        age_by: dict[str, float] = {}
        dead_by: dict[str, float] = {}
        # Every durable channel has a series, even with nothing stored.
        labels = [channel.name() for channel in listener_registry if channel.lock_notifications]
        labels += [names.get(row.channel, row.channel) for row in backlog]
        for label in labels:
            pending_by[label] = age_by[label] = dead_by[label] = 0
        for row in backlog:
            label = names.get(row.channel, row.channel)
            if row.state == NotificationState.PENDING:
                pending_by[label] = row.notifications
                age_by[label] = row.age or 0.0
            elif row.state == NotificationState.DEAD:
                dead_by[label] = row.notifications
        for gauge, values in ((pending, pending_by), (oldest, age_by), (dead, dead_by)):
            for label, number in sorted(values.items()):
                gauge.add_metric([label], number)
        yield pending
        yield oldest
        yield dead

        usage = GaugeMetricFamily(
            "pgpubsub_notify_queue_usage",
            "Fraction of the server's NOTIFY queue in use (pg_notification_queue_usage()).",
        )
        usage.add_metric([], float(usage_value))
        yield usage
        workers = GaugeMetricFamily(
            "pgpubsub_workers_connected",
            "Worker LISTEN sessions connected to the database (from pg_stat_activity).",
        )
        workers.add_metric([], workers_count)
        yield workers
        duration = GaugeMetricFamily(
            "pgpubsub_database_scrape_seconds", "Seconds the database gauges took to read."
        )
        duration.add_metric([], time.monotonic() - started)
        yield duration


_installed: dict[int, PrometheusObserver] = {}


def install(
    registry: CollectorRegistry | None = None,
    *,
    using: str | None = None,
    timeout: float = 2.0,
) -> PrometheusObserver:
    """Create (once per registry) the observer and the database collector.

    Returns the observer; register it with :func:`pgpubsub.observe.add_observer`
    (``listen --metrics-port`` does). Call it in the main thread.
    """
    client = prometheus()
    target = registry if registry is not None else client.REGISTRY
    observer = _installed.get(id(target))
    if observer is None:
        alias = using or conf.database_alias()
        observer = PrometheusObserver(target, channels=list(registry_channels()))
        target.register(
            DatabaseCollector(
                probe_params(alias, timeout),
                worker_application_name=worker_application_name(alias),
                timeout=timeout,
            )
        )
        _installed[id(target)] = observer
    return observer


def registry_channels() -> list[type[BaseChannel]]:
    """The channels that have listeners, sorted by dotted path."""
    return sorted(listener_registry, key=lambda channel: channel.name())
