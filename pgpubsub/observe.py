"""Hooks through which the worker reports what it does.

The worker calls every registered :class:`Observer`; the default has no
observers, so reporting costs nothing. :mod:`pgpubsub.metrics` provides a
Prometheus observer (``listen --metrics-port``); OpenTelemetry users can
register their own observer with :func:`add_observer`.
"""

from __future__ import annotations


class Observer:
    """Base class of worker observers; override the methods you need.

    ``channel`` is always the channel's dotted path. Methods are called in the
    worker's thread and must be fast and must not raise.
    """

    def connection_changed(self, connected: bool) -> None:
        """The worker's LISTEN connection came up (True) or was lost (False)."""

    def received(self, channel: str, count: int) -> None:
        """``count`` events arrived on ``channel`` (NOTIFY or stored)."""

    def processed(self, channel: str, duration: float, latency: float | None) -> None:
        """One event was handled by all its listeners.

        ``duration`` is the listeners' run time in seconds; ``latency`` the
        seconds from publication to completion, when known.
        """

    def failed(self, channel: str, listener: str | None) -> None:
        """A listener raised (``listener`` is its dotted path, None for a bad payload)."""

    def retried(self, channel: str) -> None:
        """A durable notification failed and was scheduled for another attempt."""

    def dead_lettered(self, channel: str) -> None:
        """A durable notification used up its attempts and became a dead letter."""


_observers: list[Observer] = []


def add_observer(observer: Observer) -> None:
    """Register an observer for the workers of this process."""
    if observer not in _observers:
        _observers.append(observer)


def remove_observer(observer: Observer) -> None:
    """Unregister an observer added with :func:`add_observer` (no error if absent)."""
    if observer in _observers:
        _observers.remove(observer)


def observers() -> list[Observer]:
    """The registered observers (the live list; do not modify it)."""
    return _observers
