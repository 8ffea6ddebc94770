"""Settings read by pgpubsub.

Each setting is read lazily, on every use, through one function, so that
tests and ``override_settings`` see the current value. The defaults are
documented here and in ``docs/settings.rst``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


def _get(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


def _positive_number(name: str, default: float, *, allow_zero: bool = False) -> float:
    value = _get(name, default)
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value < 0
        or (value == 0 and not allow_zero)
    ):
        expected = "a number >= 0" if allow_zero else "a number > 0"
        raise ImproperlyConfigured(f"{name} must be {expected}, got {value!r}")
    return float(value)


def _positive_int(name: str, default: int) -> int:
    value = _get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ImproperlyConfigured(f"{name} must be an integer >= 1, got {value!r}")
    return value


def pass_context_to_listeners() -> bool:
    """``PGPUBSUB_PASS_CONTEXT_TO_LISTENERS`` (default ``False``).

    When true every trigger listener (as in django-pgpubsub 1.3.1) and every
    app-level listener that takes ``**kwargs`` receives the notification
    context as a ``context`` keyword argument. Listeners that declare a
    ``context`` parameter receive it either way.
    """
    return bool(_get("PGPUBSUB_PASS_CONTEXT_TO_LISTENERS", False))


def tx_bound_notification_context() -> bool:
    """``PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT`` (default ``True``).

    When true, :func:`pgpubsub.set_notification_context` applies to the
    current transaction only (``SET LOCAL``) and must be called inside
    ``transaction.atomic()``. When false it applies to the rest of the
    database session, leaking into later transactions on the same connection.
    """
    return bool(_get("PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT", True))


def listener_filter() -> str | None:
    """``PGPUBSUB_LISTENER_FILTER`` (default ``None``).

    Dotted path of a :class:`pgpubsub.ListenerFilterProvider` whose
    ``get_filter()`` returns a ``Q`` over :class:`pgpubsub.models.Notification`
    selecting the stored notifications this worker may take.
    """
    value = _get("PGPUBSUB_LISTENER_FILTER", None)
    if value is not None and not isinstance(value, str):
        raise ImproperlyConfigured(
            f"PGPUBSUB_LISTENER_FILTER must be a dotted path string, got {value!r}"
        )
    return value


def poll_interval() -> float:
    """``PGPUBSUB_POLL_INTERVAL`` (default ``5.0`` seconds).

    How often a worker serving durable channels looks for stored
    notifications without having been woken by a NOTIFY (missed wake-ups,
    notifications released by a crashed worker). Broadcast-only workers never
    poll.
    """
    return _positive_number("PGPUBSUB_POLL_INTERVAL", 5.0)


def batch_size() -> int:
    """``PGPUBSUB_BATCH_SIZE`` (default ``500``): stored notifications claimed per transaction."""
    return _positive_int("PGPUBSUB_BATCH_SIZE", 500)


def optimistic_batches() -> bool:
    """``PGPUBSUB_OPTIMISTIC_BATCHES`` (default ``True``).

    Run each batch of events under one savepoint and replay it with a
    savepoint per listener call (broadcast) or per notification (durable)
    only when a listener raises. Database effects are the same either way;
    effects outside the database of listener calls that preceded a failure
    in the same batch happen again in the replay. ``False`` always uses a
    savepoint per call, at a cost of two statements each.
    """
    return bool(_get("PGPUBSUB_OPTIMISTIC_BATCHES", True))


def max_attempts() -> int:
    """``PGPUBSUB_MAX_ATTEMPTS`` (default ``5``).

    How many times a durable notification is tried before it is
    dead-lettered. A channel may override it with a ``max_attempts`` class
    attribute.
    """
    return _positive_int("PGPUBSUB_MAX_ATTEMPTS", 5)


def retry_backoff() -> float:
    """``PGPUBSUB_RETRY_BACKOFF`` (default ``1.0`` second).

    The delay before the first retry of a failed durable notification; each
    further retry doubles it, up to ``PGPUBSUB_RETRY_BACKOFF_MAX``.
    """
    return _positive_number("PGPUBSUB_RETRY_BACKOFF", 1.0, allow_zero=True)


def retry_backoff_max() -> float:
    """``PGPUBSUB_RETRY_BACKOFF_MAX`` (default ``300.0`` seconds)."""
    return _positive_number("PGPUBSUB_RETRY_BACKOFF_MAX", 300.0, allow_zero=True)


def payload_retention() -> float:
    """``PGPUBSUB_PAYLOAD_RETENTION`` (default ``3600.0`` seconds).

    How long a broadcast payload too large for a NOTIFY stays in the
    ``pgpubsub_payload`` table. Workers read it within moments; a worker
    that falls further behind than this loses it. Workers delete expired
    payloads as they go.
    """
    return _positive_number("PGPUBSUB_PAYLOAD_RETENTION", 3600.0)


def broadcast_retention() -> float:
    """``PGPUBSUB_BROADCAST_RETENTION`` (default ``300.0`` seconds).

    How long an event of a broadcast channel (one without ``retention``)
    stays in the broadcast table. Workers and subscription hubs read it
    within moments; one that falls further behind than this misses it.
    """
    return _positive_number("PGPUBSUB_BROADCAST_RETENTION", 300.0)


def database_alias() -> str:
    """``PGPUBSUB_DATABASE`` (default ``"default"``): the database the worker serves."""
    value = _get("PGPUBSUB_DATABASE", "default")
    if value not in settings.DATABASES:
        raise ImproperlyConfigured(
            f"PGPUBSUB_DATABASE names {value!r}, which is not in DATABASES "
            f"(known: {', '.join(sorted(settings.DATABASES))})"
        )
    return str(value)


def shutdown_timeout() -> float:
    """``PGPUBSUB_SHUTDOWN_TIMEOUT`` (default ``30.0`` seconds).

    How long the ``listen`` supervisor waits for its workers to finish
    after SIGTERM before killing them; ``0`` kills them at once.
    """
    return _positive_number("PGPUBSUB_SHUTDOWN_TIMEOUT", 30.0, allow_zero=True)
