"""The Prometheus observer, on its own registry (no database, no worker)."""

from __future__ import annotations

import builtins
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from pgpubsub import metrics
from pgpubsub.observe import Observer, add_observer, observers, remove_observer
from tests.app.channels import Greeting, OrderChannel

GREETING = Greeting.name()
ORDER = OrderChannel.name()


@pytest.fixture
def observer() -> metrics.PrometheusObserver:
    return metrics.PrometheusObserver(CollectorRegistry(), channels=[Greeting, OrderChannel])


def sample(observer: metrics.PrometheusObserver, name: str, **labels: str) -> float | None:
    return observer.registry.get_sample_value(name, labels)


def test_channels_are_declared_with_zero_counts(observer):
    for name in (
        "pgpubsub_notifications_received_total",
        "pgpubsub_notifications_processed_total",
        "pgpubsub_notifications_retried_total",
        "pgpubsub_notifications_dead_lettered_total",
        "pgpubsub_notification_latency_seconds_count",
        "pgpubsub_listener_duration_seconds_count",
    ):
        assert sample(observer, name, channel=GREETING) == 0, name
    listener = "tests.app.listeners.greet"
    assert (
        sample(observer, "pgpubsub_notifications_failed_total", channel=GREETING, listener=listener)
        == 0
    )


def test_hooks_count_per_channel(observer):
    observer.received(GREETING, 3)
    observer.processed(GREETING, 0.002, 0.05)
    observer.processed(GREETING, 0.004, None)  # publication time unknown
    observer.failed(GREETING, "tests.app.listeners.greet")
    observer.failed(GREETING, None)
    observer.retried(ORDER)
    observer.dead_lettered(ORDER)

    assert sample(observer, "pgpubsub_notifications_received_total", channel=GREETING) == 3
    assert sample(observer, "pgpubsub_notifications_processed_total", channel=GREETING) == 2
    assert sample(observer, "pgpubsub_listener_duration_seconds_count", channel=GREETING) == 2
    assert sample(observer, "pgpubsub_listener_duration_seconds_sum", channel=GREETING) == (
        pytest.approx(0.006)
    )
    assert sample(observer, "pgpubsub_notification_latency_seconds_count", channel=GREETING) == 1
    assert (
        sample(
            observer,
            "pgpubsub_notification_latency_seconds_bucket",
            channel=GREETING,
            le="0.05",
        )
        == 1
    )
    failed = "pgpubsub_notifications_failed_total"
    assert sample(observer, failed, channel=GREETING, listener="tests.app.listeners.greet") == 1
    assert sample(observer, failed, channel=GREETING, listener=metrics.NO_LISTENER) == 1
    assert sample(observer, "pgpubsub_notifications_retried_total", channel=ORDER) == 1
    assert sample(observer, "pgpubsub_notifications_dead_lettered_total", channel=ORDER) == 1
    assert sample(observer, "pgpubsub_notifications_received_total", channel=ORDER) == 0


def test_connection_gauge_and_losses(observer):
    assert sample(observer, "pgpubsub_worker_connected") == 0
    observer.connection_changed(True)
    assert sample(observer, "pgpubsub_worker_connected") == 1
    observer.connection_changed(False)
    observer.connection_changed(False)  # still down: one loss
    observer.connection_changed(True)
    assert sample(observer, "pgpubsub_worker_connected") == 1
    assert sample(observer, "pgpubsub_worker_connection_losses_total") == 1


def test_exposition_is_prometheus_text(observer):
    observer.received(GREETING, 1)
    content_type, body = observer.exposition()
    assert content_type.startswith("text/plain")
    families = {family.name for family in text_string_to_metric_families(body.decode())}
    assert "pgpubsub_notifications_received" in families
    assert "pgpubsub_notification_latency_seconds" in families
    status, _, same = observer.routes()["/metrics"]()
    assert status == 200 and b"pgpubsub_notifications_received_total" in same


def test_an_observer_is_called_once_registered():
    calls: list[tuple[str, int]] = []

    class Recorder(Observer):
        def received(self, channel: str, count: int) -> None:
            calls.append((channel, count))

    recorder = Recorder()
    add_observer(recorder)
    add_observer(recorder)  # idempotent
    try:
        for registered in observers():
            registered.received(GREETING, 2)
    finally:
        remove_observer(recorder)
    assert calls == [(GREETING, 2)]
    assert recorder not in observers()


def test_missing_prometheus_client_names_the_extra(monkeypatch):
    real_import = builtins.__import__

    def without_prometheus(name, *args, **kwargs):
        if name == "prometheus_client" or name.startswith("prometheus_client."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "prometheus_client", raising=False)
    monkeypatch.setattr(builtins, "__import__", without_prometheus)
    with pytest.raises(ImproperlyConfigured, match=r"pip install 'pgpubsub-django\[metrics\]'"):
        metrics.PrometheusObserver(None)
