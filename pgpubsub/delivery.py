"""Running listeners: what broadcast batches and durable claims have in common.

Delivery takes decoded events (:mod:`pgpubsub.wire`) to their listeners on
a Django connection, by the calling convention of :mod:`pgpubsub.calling`.
:mod:`pgpubsub.broadcast` delivers NOTIFY payloads and
:mod:`pgpubsub.durable` the notifications it claims from the outbox; both
build on this module:

* the two transaction strategies, in :class:`Delivery`:
  :meth:`~Delivery.run_all` runs a whole batch in the transaction or
  savepoint the caller opened and raises at the first failure (optimistic),
  and :meth:`~Delivery.in_savepoint` runs one piece of work in a savepoint
  of its own and hands back its failure (guarded);
* the reporting of outcomes, logs and observers together, each written
  once: :func:`report_received`, :func:`report_processed`,
  :func:`report_failure`, :func:`report_retried`,
  :func:`report_dead_lettered`, :func:`report_skipped`;
* :func:`split_notifies`, which sorts what arrived on a LISTEN connection
  into broadcast payloads and durable channels to drain, for the worker
  and for ``pgpubsub.listen.process_notifications()``.

Broadcast and durable delivery are modules of their own beside this one:
each has its own decoding, claiming and bookkeeping, and one module for all
of it would hold three ideas.

Optimistic batches (the default, ``PGPUBSUB_OPTIMISTIC_BATCHES = True``): a
broadcast batch runs under a single savepoint; a durable batch is claimed
and deleted by one statement and its listeners run with no savepoint at
all. When every listener succeeds, which is the common case, that costs a
couple of statements per batch instead of two per listener call. When a
listener raises, the broadcast batch is rolled back to its savepoint, and
the durable claim transaction is rolled back whole (its rows return
untouched and are claimed again), and the batch is replayed in guarded
mode, so a failure still undoes only the failing listener's (broadcast) or
notification's (durable) own database work. The price: listener calls that
ran before the failure in the same batch run again in the replay. Their
database effects happen once (the first run was rolled back); effects
outside the database, such as an email, can happen twice.

Guarded mode (``PGPUBSUB_OPTIMISTIC_BATCHES = False``, every replay, and
every retry of a durable notification that has failed before): each
broadcast listener call runs in its own savepoint, each stored
notification's listeners together in one. A failed notification is likely
to fail again, so its retries skip the optimistic run that would make the
listeners before the failing one run twice per attempt.

Nothing here is shared with the worker loop: a delivery object keeps only
its own caches, and what the worker needs back (the retries a drain
scheduled) is returned.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import psycopg

from . import conf
from .calling import ListenerCall, listener_calls
from .channel import BaseChannel
from .connection import CONNECTION_ERRORS
from .connector import SyncConnector
from .exceptions import PayloadError
from .observe import observers

logger = logging.getLogger("pgpubsub")

T = TypeVar("T")


class Rollback(Exception):
    """Abandons an optimistic run: the batch is rolled back and replayed guarded."""


# -- reporting ----------------------------------------------------------------------


def report_received(channel: type[BaseChannel], count: int) -> None:
    """``count`` events of ``channel`` arrived (NOTIFY) or were claimed (outbox)."""
    for observer in observers():
        observer.received(channel.name(), count)


def report_processed(
    channel: type[BaseChannel],
    duration: float,
    published: float | None,
    notification_id: int | None = None,
) -> None:
    """One event was handled by all its listeners in ``duration`` seconds."""
    if observers():
        latency = time.time() - published if published is not None else None
        for observer in observers():
            observer.processed(channel.name(), duration, latency)
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "pgpubsub: processed %s on %s in %.1f ms",
            "an event" if notification_id is None else f"stored notification {notification_id}",
            channel.name(),
            duration * 1000,
            extra={
                "channel": channel.name(),
                "notification_id": notification_id,
                "duration": duration,
            },
        )


def report_failure(
    channel: type[BaseChannel],
    listener: str | None,
    exc: BaseException,
    notification_id: int | None = None,
) -> None:
    """A listener (or, for a stored notification, its decoding) raised ``exc``."""
    if notification_id is None:
        logger.error(
            "pgpubsub: listener %s failed on channel %s",
            listener,
            channel.name(),
            exc_info=exc,
            extra={"channel": channel.name(), "listener": listener},
        )
    else:
        logger.error(
            "pgpubsub: stored notification %d on channel %s failed in %s",
            notification_id,
            channel.name(),
            listener or "decoding",
            exc_info=exc,
            extra={
                "channel": channel.name(),
                "listener": listener,
                "notification_id": notification_id,
            },
        )
    for observer in observers():
        observer.failed(channel.name(), listener)


def report_retried(channel: type[BaseChannel]) -> None:
    """A durable notification failed and was scheduled for another attempt."""
    for observer in observers():
        observer.retried(channel.name())


def report_dead_lettered(channel: type[BaseChannel], notification_id: int, attempts: int) -> None:
    """A durable notification used up its ``attempts`` and became a dead letter."""
    logger.error(
        "pgpubsub: stored notification %d on channel %s dead-lettered after %d attempts",
        notification_id,
        channel.name(),
        attempts,
        extra={"channel": channel.name(), "notification_id": notification_id},
    )
    for observer in observers():
        observer.dead_lettered(channel.name())


def report_skipped(channel: type[BaseChannel], message: str, *args: Any) -> None:
    """An event no listener could be given (logged as an error with ``message``)."""
    logger.error(message, *args)
    for observer in observers():
        observer.failed(channel.name(), None)


# -- what arrived on a LISTEN connection ---------------------------------------------


def split_notifies(
    notifies: Iterable[psycopg.Notify], channel_of: Callable[[str], type[BaseChannel] | None]
) -> tuple[list[tuple[type[BaseChannel], str]], list[type[BaseChannel]]]:
    """Sort NOTIFYs into broadcast payloads (channel, payload) and durable channels to drain.

    ``channel_of`` maps a database channel name to its channel (``None``:
    not one of ours). On a durable channel the payload is only a wake-up:
    the outbox table is the truth, so each such channel is listed once. On a
    broadcast channel an empty payload is a wake-up too (the events are in
    the event tables, :mod:`pgpubsub.eventlog`); a payload is a message sent
    by the SQL of version 1 or by django-pgpubsub 1.3.1, carrying its events.
    """
    broadcast: list[tuple[type[BaseChannel], str]] = []
    durable: list[type[BaseChannel]] = []
    for notify in notifies:
        channel = channel_of(notify.channel)
        if channel is None:
            continue
        if not channel.lock_notifications:
            if notify.payload:
                broadcast.append((channel, notify.payload))
        elif channel not in durable:
            durable.append(channel)
    return broadcast, durable


# -- the strategies -----------------------------------------------------------------


class Delivery:
    """Runs listeners on the Django connection ``using``; the base of both kinds of delivery.

    Reads ``PGPUBSUB_OPTIMISTIC_BATCHES`` and
    ``PGPUBSUB_PASS_CONTEXT_TO_LISTENERS`` once, when it is built.
    """

    def __init__(self, using: str) -> None:
        self.using = using
        self.connector = SyncConnector(using)
        self.optimistic = conf.optimistic_batches()
        self.pass_context = conf.pass_context_to_listeners()
        # The registry is a public dict that may change between runs (see
        # pgpubsub.registry): this cache lives as long as this object.
        self._calls: dict[tuple[type[BaseChannel], str | None], list[ListenerCall]] = {}

    def calls(self, channel: type[BaseChannel], trigger: str | None) -> list[ListenerCall]:
        """:func:`listener_calls`, looked up once per (channel, trigger)."""
        found = self._calls.get((channel, trigger))
        if found is None:
            found = self._calls[channel, trigger] = listener_calls(
                channel, trigger, self.pass_context
            )
        return found

    def run_all(self, items: Iterable[T], run: Callable[[T], None]) -> list[tuple[T, float]]:
        """Run every item (optimistic), timing each; raise at the first failure.

        Runs in the transaction or savepoint the caller opened, which rolls
        back the whole batch when this raises. A listener that caught a
        database error without its own ``transaction.atomic()`` leaves the
        transaction aborted; committing it would silently roll everything
        back, so that fails the batch too.
        """
        done: list[tuple[T, float]] = []
        for item in items:
            started = time.monotonic()
            run(item)
            done.append((item, time.monotonic() - started))
        if self.connector.transaction_aborted():
            raise PayloadError("<batch>", "a listener left the transaction aborted")
        return done

    def in_savepoint(self, run: Callable[..., None], *args: Any) -> BaseException | None:
        """Run ``run(*args)`` in a savepoint of its own (guarded); return what it raised, if any.

        Its database effects are undone when it fails. A lost connection is
        re-raised: it is the worker's problem, not the listener's.
        """
        try:
            with self.connector.transaction():
                run(*args)
        except Exception as exc:
            self.reraise_if_lost(exc)
            return exc
        return None

    def reraise_if_lost(self, exc: BaseException) -> None:
        """Re-raise ``exc`` when the connection is gone (the worker reconnects)."""
        # A statement timeout, deadlock or serialization failure is an
        # OperationalError too, but only a dead connection is the worker's
        # problem; anything else is the listener's failure.
        if isinstance(exc, CONNECTION_ERRORS) and self.connector.is_lost():
            raise exc
