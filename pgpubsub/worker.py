"""The worker behind ``manage.py listen``.

One worker process holds its own autocommit psycopg connection on which it
LISTENs, separate from the Django connection its listeners use. It waits on
that connection's socket (and a self-pipe for signals), so an idle worker
sends no queries and uses no CPU; a worker serving durable channels also
wakes every ``PGPUBSUB_POLL_INTERVAL`` seconds to look for stored
notifications it was not woken for.

Delivery:

* broadcast channels: the notifications received together are dispatched in
  one transaction on the Django connection, each listener call in its own
  savepoint, so a failing listener rolls back only its own work;
* durable channels: stored notifications are claimed in batches with
  ``FOR UPDATE SKIP LOCKED``; each notification's listeners run in one
  savepoint, and the notification is deleted (or its failure recorded) in
  the claim transaction, so the listeners' database effects commit exactly
  once together with the notification's completion.

On any connection loss the worker reconnects with backoff, LISTENs again and
catches up on stored notifications. SIGTERM and SIGINT make it finish the
batch in hand and return.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import select
import signal
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
import psycopg
from django.db import connections, transaction
from django.db import utils as db_utils
from django.db.models import Q, TextField
from django.db.models.functions import Cast, Now
from django.utils.module_loading import import_string

from . import conf, sql
from .channel import BaseChannel, Channel, Listener, TriggerChannel, listeners_for, registry
from .exceptions import ChannelNotFound, PayloadError
from .models import Notification
from .observe import observers
from .payloads import Event, Message, event_decoder, message_decoder, preview

logger = logging.getLogger("pgpubsub")

#: Errors after which the worker reconnects instead of giving up.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    db_utils.OperationalError,
    db_utils.InterfaceError,
)


#: The ``application_name`` of every worker's LISTEN connection, by which
#: ``manage.py pgpubsub status``/``health`` and the metrics find the workers.
WORKER_APPLICATION_NAME = "pgpubsub-worker"


def conninfo_params(using: str) -> dict[str, Any]:
    """psycopg parameters for a worker's LISTEN connection to the Django database ``using``."""
    params = dict(connections[using].get_connection_params())
    for key in ("cursor_factory", "context", "prepare_threshold", "row_factory"):
        params.pop(key, None)
    params["application_name"] = WORKER_APPLICATION_NAME
    # An idle LISTEN connection sends nothing; TCP keepalives make a silently
    # dropped network (no FIN, no RST) show up as a dead socket within about
    # a minute and a half, so the worker reconnects.
    params.setdefault("keepalives", 1)
    params.setdefault("keepalives_idle", 60)
    params.setdefault("keepalives_interval", 10)
    params.setdefault("keepalives_count", 3)
    return params


class Backoff:
    """Exponential backoff with jitter, for reconnecting."""

    def __init__(self, first: float = 0.2, maximum: float = 15.0) -> None:
        self.first = first
        self.maximum = maximum
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.maximum, self.first * (2**self.attempt))
        self.attempt += 1
        return delay * random.uniform(0.5, 1.0)


def retry_delay(attempts: int) -> float:
    """Seconds before retry number ``attempts`` (1-based) of a failed durable notification."""
    return min(conf.retry_backoff_max(), conf.retry_backoff() * (2 ** max(0, attempts - 1)))


class Worker:
    """Listens on channels and dispatches their notifications to the listeners."""

    def __init__(
        self,
        channels: Sequence[type[BaseChannel]] | None = None,
        *,
        using: str | None = None,
    ) -> None:
        self.using = using or conf.database_alias()
        selected = list(channels) if channels else list(registry)
        if not selected:
            raise ChannelNotFound(
                "<any>",
                "no listeners are registered; declare them in a listeners.py of an installed app",
            )
        self.channels = selected
        self.by_db_name = {channel.listen_safe_name(): channel for channel in selected}
        self.durable = [channel for channel in selected if channel.lock_notifications]
        self.poll_interval = conf.poll_interval()
        self.batch_size = conf.batch_size()
        self.stopping = False
        self.listen_conn: psycopg.Connection[Any] | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._next_sweep = 0.0
        self._next_cleanup = 0.0
        self._filter_provider: Any = None
        self._last_error = ""
        #: Counters, for tests and metrics.
        self.processed = 0
        self.failed = 0

    # -- lifecycle ---------------------------------------------------------

    def stop(self, *_: Any) -> None:
        """Ask the worker to finish the batch in hand and return from :meth:`run`."""
        self.stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    @contextlib.contextmanager
    def _signal_handlers(self) -> Iterator[None]:
        previous = {sig: signal.signal(sig, self.stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def run(self, *, install_signal_handlers: bool = True) -> None:
        """Serve until :meth:`stop` is called (or SIGTERM/SIGINT arrives)."""
        handlers = self._signal_handlers() if install_signal_handlers else contextlib.nullcontext()
        backoff = Backoff()
        self._names = ", ".join(channel.name() for channel in self.channels)
        with handlers:
            try:
                while not self.stopping:
                    try:
                        self._connect()
                        self._catch_up()
                        backoff.reset()
                        logger.info(
                            "pgpubsub: worker %d ready, listening on %s", os.getpid(), self._names
                        )
                        for observer in observers():
                            observer.connection_changed(True)
                        self._serve()
                    except CONNECTION_ERRORS as exc:
                        if self.stopping:
                            break
                        delay = backoff.next()
                        logger.warning(
                            "pgpubsub: database connection lost (%s); reconnecting in %.1fs",
                            str(exc).strip() or type(exc).__name__,
                            delay,
                        )
                        self._close()
                        for observer in observers():
                            observer.connection_changed(False)
                        self._sleep(delay)
            finally:
                self._close()
                os.close(self._wake_r)
                os.close(self._wake_w)
        logger.info("pgpubsub: worker %d stopped", os.getpid())

    def _sleep(self, seconds: float) -> None:
        select.select([self._wake_r], [], [], seconds)
        self._drain_wake_pipe()

    def _drain_wake_pipe(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_r, 512):
                pass

    def _connect(self) -> None:
        # LISTEN before anything else: whatever commits from here on is either
        # announced on this connection or found by the catch-up that follows.
        conn = psycopg.Connection.connect(**conninfo_params(self.using), autocommit=True)
        self.listen_conn = conn
        for db_name in self.by_db_name:
            conn.execute(sql.listen(db_name))
        connections[self.using].close()

    def _close(self) -> None:
        if self.listen_conn is not None:
            with contextlib.suppress(Exception):
                self.listen_conn.close()
            self.listen_conn = None
        with contextlib.suppress(Exception):
            connections[self.using].close()

    def _catch_up(self) -> None:
        self._next_sweep = 0.0
        if self.durable:
            self._sweep()

    def _serve(self) -> None:
        conn = self.listen_conn
        assert conn is not None
        fd = conn.fileno()
        # Notifications that arrived while LISTEN statements ran wait in
        # psycopg's backlog, which the socket will not announce again.
        self._handle(list(conn.notifies(timeout=0)))
        while not self.stopping:
            timeout = None
            if self.durable:
                timeout = max(0.0, self._next_sweep - time.monotonic())
            readable, _, _ = select.select([fd, self._wake_r], [], [], timeout)
            if self._wake_r in readable:
                self._drain_wake_pipe()
            if self.stopping:
                break
            if fd in readable:
                self._handle(list(conn.notifies(timeout=0)))
            if self.durable and time.monotonic() >= self._next_sweep:
                self._sweep()

    # -- dispatch ----------------------------------------------------------

    def _handle(self, notifies: list[psycopg.Notify]) -> None:
        if not notifies:
            return
        broadcast: list[tuple[type[BaseChannel], str]] = []
        durable: list[type[BaseChannel]] = []
        for notify in notifies:
            channel = self.by_db_name.get(notify.channel)
            if channel is None:
                continue
            if channel.lock_notifications:
                if channel not in durable:
                    durable.append(channel)
            else:
                broadcast.append((channel, notify.payload))
        if broadcast:
            self._dispatch_broadcast(broadcast)
        for channel in durable:
            self._drain(channel)

    def _dispatch_broadcast(self, items: list[tuple[type[BaseChannel], str]]) -> None:
        spilled = False
        with transaction.atomic(using=self.using):
            for channel, payload in items:
                message = self._decode_message(channel, payload)
                if message is None:
                    continue
                spilled = spilled or message.ref is not None
                for observer in observers():
                    observer.received(channel.name(), len(message.events))
                for event in message.events:
                    self._deliver_broadcast(channel, message, event, payload)
        if spilled:
            self._cleanup_payloads()

    def _decode_message(self, channel: type[BaseChannel], payload: str) -> Message | None:
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
            return None

    def _deliver_broadcast(
        self, channel: type[BaseChannel], message: Message, event: Event, payload: str
    ) -> None:
        trigger = event.trigger or message.trigger
        context = event.context if event.context is not None else message.context
        listeners = [lst for lst in listeners_for(channel) if lst.serves(trigger)]
        if not listeners:
            return
        try:
            kwargs = self._event_kwargs(channel, event)
        except Exception as exc:
            logger.error(
                "pgpubsub: skipped an undeliverable event on %s (%s: %s): %s",
                channel.name(),
                type(exc).__name__,
                exc,
                preview(payload),
            )
            for observer in observers():
                observer.failed(channel.name(), None)
            return
        started = time.monotonic()
        for listener in listeners:
            try:
                with transaction.atomic(using=self.using):
                    listener.callback(**self._call_kwargs(listener, kwargs, context))
                self.processed += 1
            except Exception as exc:
                # A statement timeout, deadlock or serialization failure is an
                # OperationalError too, but only a dead connection is the worker's
                # problem; anything else is this listener's failure.
                if isinstance(exc, CONNECTION_ERRORS) and self._connection_lost():
                    raise
                self.failed += 1
                logger.exception(
                    "pgpubsub: listener %s failed on channel %s",
                    listener.name,
                    channel.name(),
                    extra={"channel": channel.name(), "listener": listener.name},
                )
                for observer in observers():
                    observer.failed(channel.name(), listener.name)
        if observers():
            self._report_processed(channel, started, message.ts)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "pgpubsub: processed an event on %s in %.1f ms",
                channel.name(),
                (time.monotonic() - started) * 1000,
                extra={"channel": channel.name(), "duration": time.monotonic() - started},
            )

    def _event_kwargs(self, channel: type[BaseChannel], event: Event) -> dict[str, Any]:
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

    @staticmethod
    def _report_processed(
        channel: type[BaseChannel], started: float, published: float | None
    ) -> None:
        duration = time.monotonic() - started
        latency = time.time() - published if published is not None else None
        for observer in observers():
            observer.processed(channel.name(), duration, latency)

    @staticmethod
    def _call_kwargs(
        listener: Listener, kwargs: dict[str, Any], context: dict[str, Any] | None
    ) -> dict[str, Any]:
        # PGPUBSUB_PASS_CONTEXT_TO_LISTENERS gives every trigger listener a
        # ``context`` argument (as django-pgpubsub 1.3.1 did); app-level
        # listeners get it when they can take it.
        if listener.wants_context or (
            conf.pass_context_to_listeners()
            and (listener.takes_kwargs or issubclass(listener.channel, TriggerChannel))
        ):
            return {**kwargs, "context": context or {}}
        return kwargs

    def _connection_lost(self) -> bool:
        """Whether the Django connection is unusable (as opposed to a failed statement)."""
        wrapper = connections[self.using]
        conn = wrapper.connection
        if conn is None or conn.closed:
            return True
        return bool(conn.pgconn.status != psycopg.pq.ConnStatus.OK)

    def _cleanup_payloads(self) -> None:
        now = time.monotonic()
        if now < self._next_cleanup:
            return
        retention = conf.payload_retention()
        self._next_cleanup = now + min(60.0, retention / 4)
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql.DELETE_EXPIRED_PAYLOADS, [retention])

    # -- durable channels --------------------------------------------------

    def _sweep(self) -> None:
        self._next_sweep = time.monotonic() + self.poll_interval
        for channel in self.durable:
            if self.stopping:
                return
            self._drain(channel)

    def _extra_filter(self) -> Q:
        path = conf.listener_filter()
        if not path:
            return Q()
        if self._filter_provider is None:
            self._filter_provider = import_string(path)()
        filter_q = self._filter_provider.get_filter()
        return filter_q if filter_q is not None else Q()

    def _claim(self, channel: type[BaseChannel]) -> list[tuple[int, str, int, Any]]:
        queryset = (
            Notification.objects.using(self.using)
            .filter(
                channel=channel.listen_safe_name(),
                state=Notification.PENDING,
                available_at__lte=Now(),
            )
            .filter(self._extra_filter())
            .order_by("id")
            .select_for_update(skip_locked=True)
            .annotate(payload_text=Cast("payload", TextField()))
            .values_list("id", "payload_text", "attempts", "created_at")
        )
        return list(queryset[: self.batch_size])

    def _drain(self, channel: type[BaseChannel]) -> None:
        """Process the stored notifications of a durable channel until none are due."""
        max_attempts = channel.effective_max_attempts()
        while not self.stopping:
            with transaction.atomic(using=self.using):
                rows = self._claim(channel)
                if rows:
                    for observer in observers():
                        observer.received(channel.name(), len(rows))
                done: list[int] = []
                for notification_id, payload, attempts, created_at in rows:
                    if self._process_stored(channel, notification_id, payload, created_at):
                        done.append(notification_id)
                    else:
                        self._record_failure(channel, notification_id, attempts, max_attempts)
                if done:
                    with connections[self.using].cursor() as cursor:
                        cursor.execute(sql.DELETE_NOTIFICATIONS, [done])
            if len(rows) < self.batch_size:
                return

    def _process_stored(
        self, channel: type[BaseChannel], notification_id: int, payload: str, created_at: Any
    ) -> bool:
        started = time.monotonic()
        current: str | None = None
        try:
            with transaction.atomic(using=self.using):
                event = event_decoder.decode(payload)
                kwargs = self._event_kwargs(channel, event)
                for listener in listeners_for(channel):
                    if listener.serves(event.trigger):
                        current = listener.name
                        listener.callback(**self._call_kwargs(listener, kwargs, event.context))
        except Exception as exc:
            if isinstance(exc, CONNECTION_ERRORS) and self._connection_lost():
                raise
            self._last_error = traceback.format_exc()
            self.failed += 1
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
            return False
        self.processed += 1
        if observers():
            self._report_processed(channel, started, created_at.timestamp())
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "pgpubsub: processed stored notification %d on %s in %.1f ms",
                notification_id,
                channel.name(),
                (time.monotonic() - started) * 1000,
                extra={
                    "channel": channel.name(),
                    "notification_id": notification_id,
                    "duration": time.monotonic() - started,
                },
            )
        return True

    def _record_failure(
        self, channel: type[BaseChannel], notification_id: int, attempts: int, max_attempts: int
    ) -> None:
        delay = retry_delay(attempts + 1)
        with connections[self.using].cursor() as cursor:
            cursor.execute(
                sql.FAIL_NOTIFICATION,
                {
                    "id": notification_id,
                    "error": self._last_error,
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
            self._next_sweep = min(self._next_sweep, time.monotonic() + delay)
            for observer in observers():
                observer.retried(channel.name())
