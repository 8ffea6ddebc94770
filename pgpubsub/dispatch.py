"""Running listeners: broadcast batches and durable claims.

Both paths run a batch of events in one transaction on the Django connection.

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
"""

from __future__ import annotations

import heapq
import logging
import math
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import psycopg
from django.db import connections, transaction
from django.db.models import Q, TextField
from django.db.models.functions import Cast, Now
from django.utils.module_loading import import_string

from . import conf, sql
from .backoff import exponential_delay
from .channel import BaseChannel, Channel, TriggerChannel
from .connection import CONNECTION_ERRORS
from .exceptions import PayloadError
from .models import Notification
from .observe import observers
from .registry import Listener, listeners_for
from .wire import Event, Message, decode_stored_event, message_decoder, preview

logger = logging.getLogger("pgpubsub")


def retry_delay(attempts: int) -> float:
    """Seconds before retry number ``attempts`` (1-based) of a failed durable notification."""
    return exponential_delay(attempts, conf.retry_backoff(), conf.retry_backoff_max())


@dataclass
class _Delivery:
    """One broadcast event and the listeners it goes to."""

    channel: type[BaseChannel]
    listeners: list[Listener]
    event: Event
    context: dict[str, Any] | None
    published: float | None
    payload: str


class _Rollback(Exception):
    """Raised inside the batch savepoint to abandon an optimistic run."""


class Dispatcher:
    """Delivers events to listeners on the Django connection ``using``."""

    def __init__(self, using: str) -> None:
        self.using = using
        self.batch_size = conf.batch_size()
        self.optimistic = conf.optimistic_batches()
        self._pass_context = conf.pass_context_to_listeners()
        self._listeners: dict[tuple[type[BaseChannel], str | None], list[Listener]] = {}
        self._filter_provider: Any = None
        self._next_cleanup = 0.0
        self._current: str | None = None
        # A heap of the monotonic times at which the retries scheduled by
        # this dispatcher fall due, so that each one is looked for on time.
        self._retries_due: list[float] = []
        self.processed = 0
        self.failed = 0

    # -- helpers -----------------------------------------------------------

    @property
    def next_retry(self) -> float:
        """The monotonic time of the earliest retry scheduled here and not yet looked for."""
        return self._retries_due[0] if self._retries_due else math.inf

    def retries_looked_for(self, now: float) -> None:
        """Forget the retries due by ``now``: a drain with ``retries=True`` is taking them."""
        while self._retries_due and self._retries_due[0] <= now:
            heapq.heappop(self._retries_due)

    def listeners(self, channel: type[BaseChannel], trigger: str | None) -> list[Listener]:
        key = (channel, trigger)
        found = self._listeners.get(key)
        if found is None:
            found = [lst for lst in listeners_for(channel) if lst.serves(trigger)]
            self._listeners[key] = found
        return found

    def connection_lost(self) -> bool:
        """Whether the Django connection is unusable (as opposed to a failed statement)."""
        conn = connections[self.using].connection
        if conn is None or conn.closed:
            return True
        return bool(conn.pgconn.status != psycopg.pq.ConnStatus.OK)

    def _reraise_if_lost(self, exc: BaseException) -> None:
        # A statement timeout, deadlock or serialization failure is an
        # OperationalError too, but only a dead connection is the worker's
        # problem; anything else is the listener's failure.
        if isinstance(exc, CONNECTION_ERRORS) and self.connection_lost():
            raise exc

    def event_kwargs(self, channel: type[BaseChannel], event: Event) -> dict[str, Any]:
        if issubclass(channel, TriggerChannel):
            rows = channel.row_decoder()
            return {
                "old": rows.build(event.old, self.using),
                "new": rows.build(event.new, self.using),
            }
        if issubclass(channel, Channel):
            if not event.kwargs:
                raise PayloadError(channel.name(), "the event has no 'kwargs'")
            return channel.codec().decode_kwargs(event.kwargs)
        raise PayloadError(channel.name(), "unknown kind of channel")  # pragma: no cover

    def _call(
        self, listener: Listener, kwargs: dict[str, Any], context: dict[str, Any] | None
    ) -> None:
        # PGPUBSUB_PASS_CONTEXT_TO_LISTENERS gives every trigger listener a
        # ``context`` argument (as django-pgpubsub 1.3.1 did); app-level
        # listeners get it when they can take it.
        if listener.wants_context or (
            self._pass_context
            and (listener.takes_kwargs or issubclass(listener.channel, TriggerChannel))
        ):
            listener.callback(**kwargs, context=context or {})
        else:
            listener.callback(**kwargs)

    def _processed(
        self,
        channel: type[BaseChannel],
        duration: float,
        published: float | None,
        notification_id: int | None = None,
    ) -> None:
        """Account for one event handled by all its listeners in ``duration`` seconds."""
        self.processed += 1
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

    def _check_transaction(self) -> None:
        """Raise if a listener left the transaction aborted.

        A listener that catches a database error without its own
        ``transaction.atomic()`` leaves the transaction unusable; committing
        it would silently roll everything back, so this batch must fail.
        """
        conn = connections[self.using].connection
        if (
            conn is not None
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        ):
            raise PayloadError("<batch>", "a listener left the transaction aborted")

    # -- broadcast ---------------------------------------------------------

    def broadcast(self, items: list[tuple[type[BaseChannel], str]]) -> None:
        """Deliver NOTIFY payloads received together, in one transaction."""
        batch: list[_Delivery] = []
        spilled = False
        for channel, payload in items:
            message = self._decode_message(channel, payload)
            if message is None:
                continue
            spilled = spilled or message.ref is not None
            for observer in observers():
                observer.received(channel.name(), len(message.events))
            for event in message.events:
                listeners = self.listeners(channel, event.trigger or message.trigger)
                if listeners:
                    context = event.context if event.context is not None else message.context
                    batch.append(_Delivery(channel, listeners, event, context, message.ts, payload))
        if batch:
            with transaction.atomic(using=self.using):
                if not (self.optimistic and self._broadcast_optimistic(batch)):
                    self._broadcast_guarded(batch)
        if spilled:
            self._cleanup_payloads()

    def _decode_message(self, channel: type[BaseChannel], payload: str) -> Message | None:
        if not payload:
            # A durable channel's wake-up: the code says broadcast, the
            # database's trigger (or another process's code) says durable.
            logger.error(
                "pgpubsub: an empty wake-up NOTIFY arrived on %s, a broadcast channel: its "
                "events are stored in the outbox by a trigger compiled while it had "
                "lock_notifications = True; run `python manage.py makemigrations`, then "
                "`python manage.py migrate`",
                channel.name(),
            )
            for observer in observers():
                observer.failed(channel.name(), None)
            return None
        try:
            message = message_decoder.decode(payload)
            if message.ref is not None:
                with connections[self.using].cursor() as cursor:
                    cursor.execute(sql.FETCH_PAYLOAD, [message.ref])
                    row = cursor.fetchone()
                if row is None:
                    raise PayloadError(
                        channel.name(),
                        f"stored payload {message.ref} no longer exists "
                        "(deleted after PGPUBSUB_PAYLOAD_RETENTION?)",
                    )
                ref = message.ref
                message = message_decoder.decode(row[0])
                message.ref = ref
            return message
        except (msgspec.DecodeError, msgspec.ValidationError, PayloadError) as exc:
            logger.error(
                "pgpubsub: skipped a malformed notification on %s (%s): %s",
                channel.name(),
                exc,
                preview(payload),
            )
            for observer in observers():
                observer.failed(channel.name(), None)
            return None

    def _broadcast_optimistic(self, batch: list[_Delivery]) -> bool:
        done: list[tuple[type[BaseChannel], float, float | None]] = []
        try:
            with transaction.atomic(using=self.using):
                for delivery in batch:
                    started = time.monotonic()
                    try:
                        kwargs = self.event_kwargs(delivery.channel, delivery.event)
                    except Exception as exc:
                        raise _Rollback from exc
                    for listener in delivery.listeners:
                        self._call(listener, kwargs, delivery.context)
                    done.append((delivery.channel, time.monotonic() - started, delivery.published))
                self._check_transaction()
        except Exception as exc:
            self._reraise_if_lost(exc)
            logger.debug("pgpubsub: a broadcast batch failed; replaying it guarded")
            return False
        for channel, duration, published in done:
            self._processed(channel, duration, published)
        return True

    def _broadcast_guarded(self, batch: list[_Delivery]) -> None:
        for delivery in batch:
            channel = delivery.channel
            try:
                kwargs = self.event_kwargs(channel, delivery.event)
            except Exception as exc:
                logger.error(
                    "pgpubsub: skipped an undeliverable event on %s (%s: %s): %s",
                    channel.name(),
                    type(exc).__name__,
                    exc,
                    preview(delivery.payload),
                )
                for observer in observers():
                    observer.failed(channel.name(), None)
                continue
            started = time.monotonic()
            for listener in delivery.listeners:
                try:
                    with transaction.atomic(using=self.using):
                        self._call(listener, kwargs, delivery.context)
                except Exception as exc:
                    self._reraise_if_lost(exc)
                    self.failed += 1
                    logger.exception(
                        "pgpubsub: listener %s failed on channel %s",
                        listener.name,
                        channel.name(),
                        extra={"channel": channel.name(), "listener": listener.name},
                    )
                    for observer in observers():
                        observer.failed(channel.name(), listener.name)
            self._processed(channel, time.monotonic() - started, delivery.published)

    def _cleanup_payloads(self) -> None:
        now = time.monotonic()
        if now < self._next_cleanup:
            return
        retention = conf.payload_retention()
        self._next_cleanup = now + min(60.0, retention / 4)
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql.DELETE_EXPIRED_PAYLOADS, [retention])

    # -- durable channels --------------------------------------------------

    def _extra_filter(self) -> Q | None:
        path = conf.listener_filter()
        if not path:
            return None
        if self._filter_provider is None:
            self._filter_provider = import_string(path)()
        return self._filter_provider.get_filter() or Q()

    def _claim(
        self,
        by_name: dict[str, type[BaseChannel]],
        after: int,
        extra: Q | None,
        retries_only: bool = False,
    ) -> list[tuple[int, str, str, int, Any]]:
        names = list(by_name)
        if extra is None:
            with connections[self.using].cursor() as cursor:
                query = sql.CLAIM_RETRIES if retries_only else sql.CLAIM
                cursor.execute(query, [after, names, self.batch_size])
                return list(cursor.fetchall())
        queryset = (
            Notification.objects.using(self.using)
            .filter(
                Q(available_at__isnull=True) | Q(available_at__lte=Now()),
                id__gt=after,
                channel__in=names,
                state=Notification.PENDING,
            )
            .filter(extra)
            .filter(**({"attempts__gt": 0} if retries_only else {}))
            .order_by("id")
            .select_for_update(skip_locked=True)
            .annotate(payload_text=Cast("payload", TextField()))
            .values_list("id", "channel", "payload_text", "attempts", "created_at")
        )
        return list(queryset[: self.batch_size])

    def drain(
        self,
        channels: list[type[BaseChannel]],
        stopping: Callable[[], bool],
        *,
        retries: bool = True,
    ) -> None:
        """Process the stored notifications of durable channels until none are due.

        Claims go forward by id (keyset), so each claim reads only fresh index
        entries however large the backlog; notifications skipped because
        another worker holds them, or not yet due, are found by the next drain.

        With optimistic batches, notifications that have failed before are
        claimed by a guarded pass of their own, run only when ``retries`` is
        true (the worker's sweeps, which also run when a retry falls due), so
        a wake-up costs no extra query.
        """
        by_name = {channel.listen_safe_name(): channel for channel in channels}
        # django-pgpubsub 1.3.1's notify() stores rows under the dotted path;
        # processes still on 1.3.1 during a rolling deploy keep writing them.
        by_name.update({channel.name(): channel for channel in channels})
        # A listener filter is a Q over the ORM, so it always claims guarded.
        if not self.optimistic or self._extra_filter() is not None:
            self._drain_pass(by_name, stopping, self._drain_guarded)
            return
        self._drain_pass(by_name, stopping, self._drain_first_attempts)
        if retries:
            self._drain_pass(by_name, stopping, self._drain_retries)

    def _drain_pass(
        self,
        by_name: dict[str, type[BaseChannel]],
        stopping: Callable[[], bool],
        claim: Callable[[dict[str, type[BaseChannel]], int, Q | None], list[Any]],
    ) -> None:
        """Claim and process batches with ``claim`` from the lowest id up, until none is left."""
        after = 0
        while not stopping():
            rows = claim(by_name, after, self._extra_filter())
            if not rows:
                return
            after = rows[-1][0]
            if len(rows) < self.batch_size:
                return

    def _drain_first_attempts(
        self, by_name: dict[str, type[BaseChannel]], after: int, extra: Q | None
    ) -> list[Any]:
        """An optimistic batch of notifications never tried; replayed guarded if one fails."""
        try:
            return self._drain_optimistic(by_name, after)
        except _Rollback:
            logger.debug("pgpubsub: a durable batch failed; replaying it guarded")
            return self._drain_guarded(by_name, after, extra)

    def _drain_retries(
        self, by_name: dict[str, type[BaseChannel]], after: int, extra: Q | None
    ) -> list[Any]:
        return self._drain_guarded(by_name, after, extra, retries_only=True)

    def _drain_optimistic(self, by_name: dict[str, type[BaseChannel]], after: int) -> list[Any]:
        """Claim, delete and process a batch in one transaction with no savepoint."""
        done: list[tuple[type[BaseChannel], float, Any, int]] = []
        with transaction.atomic(using=self.using):
            with connections[self.using].cursor() as cursor:
                cursor.execute(sql.CLAIM_AND_DELETE, [after, list(by_name), self.batch_size])
                rows = sorted(cursor.fetchall())
            try:
                for notification_id, name, payload, _attempts, created_at in rows:
                    started = time.monotonic()
                    self._run_stored(by_name[name], payload)
                    duration = time.monotonic() - started
                    done.append((by_name[name], duration, created_at, notification_id))
                self._check_transaction()
            except Exception as exc:
                self._reraise_if_lost(exc)
                raise _Rollback from exc
        # Counted once the batch is done: a failed batch is counted by its replay.
        self._report_received(by_name, rows)
        for channel, duration, created_at, notification_id in done:
            self._processed(channel, duration, created_at.timestamp(), notification_id)
        return rows

    def _drain_guarded(
        self,
        by_name: dict[str, type[BaseChannel]],
        after: int,
        extra: Q | None,
        retries_only: bool = False,
    ) -> list[Any]:
        """Claim a batch and process each notification in its own savepoint."""
        with transaction.atomic(using=self.using):
            rows = self._claim(by_name, after, extra, retries_only)
            self._report_received(by_name, rows)
            done = []
            for notification_id, name, payload, attempts, created_at in rows:
                channel = by_name[name]
                error = self._stored_guarded(channel, notification_id, payload, created_at)
                if error is None:
                    done.append(notification_id)
                else:
                    self._record_failure(channel, notification_id, attempts, error)
            if done:
                with connections[self.using].cursor() as cursor:
                    cursor.execute(sql.DELETE_NOTIFICATIONS, [done])
        return rows

    @staticmethod
    def _report_received(by_name: dict[str, type[BaseChannel]], rows: list[Any]) -> None:
        if rows and observers():
            for name, count in Counter(row[1] for row in rows).items():
                for observer in observers():
                    observer.received(by_name[name].name(), count)

    def _run_stored(self, channel: type[BaseChannel], payload: str) -> None:
        """Run the listeners of one stored notification (``_current`` names the one running)."""
        event = decode_stored_event(payload)
        if issubclass(channel, TriggerChannel):
            channel.row_decoder().check_model(event.app, event.model, required=True)
        kwargs = self.event_kwargs(channel, event)
        for listener in self.listeners(channel, event.trigger):
            self._current = listener.name
            self._call(listener, kwargs, event.context)

    def _stored_guarded(
        self, channel: type[BaseChannel], notification_id: int, payload: str, created_at: Any
    ) -> str | None:
        """Process one stored notification in its own savepoint; return the error, if any."""
        started = time.monotonic()
        self._current = None
        try:
            with transaction.atomic(using=self.using):
                self._run_stored(channel, payload)
        except Exception as exc:
            self._reraise_if_lost(exc)
            self.failed += 1
            current = self._current
            logger.exception(
                "pgpubsub: stored notification %d on channel %s failed in %s",
                notification_id,
                channel.name(),
                current or "decoding",
                extra={
                    "channel": channel.name(),
                    "listener": current,
                    "notification_id": notification_id,
                },
            )
            for observer in observers():
                observer.failed(channel.name(), current)
            return traceback.format_exc()
        self._processed(
            channel, time.monotonic() - started, created_at.timestamp(), notification_id
        )
        return None

    def _record_failure(
        self,
        channel: type[BaseChannel],
        notification_id: int,
        attempts: int,
        error: str,
    ) -> None:
        max_attempts = channel.effective_max_attempts()
        delay = retry_delay(attempts + 1)
        with connections[self.using].cursor() as cursor:
            cursor.execute(
                sql.FAIL_NOTIFICATION,
                {
                    "id": notification_id,
                    "error": error,
                    "max_attempts": max_attempts,
                    "delay": delay,
                },
            )
            row = cursor.fetchone()
        if row and row[0] == Notification.DEAD:
            logger.error(
                "pgpubsub: stored notification %d on channel %s dead-lettered after %d attempts",
                notification_id,
                channel.name(),
                attempts + 1,
                extra={"channel": channel.name(), "notification_id": notification_id},
            )
            for observer in observers():
                observer.dead_lettered(channel.name())
        else:
            heapq.heappush(self._retries_due, time.monotonic() + delay)
            for observer in observers():
                observer.retried(channel.name())
