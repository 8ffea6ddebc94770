"""The worker behind ``manage.py listen``.

One worker process holds its own autocommit psycopg connection on which it
LISTENs, separate from the Django connection its listeners use. It waits on
that connection's socket (and a self-pipe for signals), so an idle worker
sends no queries and uses no CPU; a worker serving durable channels also
wakes every ``PGPUBSUB_POLL_INTERVAL`` seconds, and when a retry falls due,
to look for stored notifications it was not woken for.

Delivery itself is not the worker's: broadcast notifications received
together are run as one batch in one transaction
(:mod:`pgpubsub.broadcast`); durable ones are claimed from the outbox in
batches, and the listeners' database effects commit exactly once together
with the notification's removal (:mod:`pgpubsub.durable`). The worker
keeps the schedule: when to sweep, and when the retries its drains
scheduled fall due.

On any connection loss the worker reconnects with backoff, LISTENs again and
catches up on stored notifications. Before its first connection has
succeeded, a connection the database refuses for its settings (a database
that does not exist, a wrong role or password) is not retried:
:class:`~pgpubsub.exceptions.DatabaseConfigurationError` is raised, and so
is :class:`~pgpubsub.exceptions.DatabaseNotMigrated` when pgpubsub's
migrations have not run. SIGTERM and SIGINT make it finish the batch in
hand and return.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from django.db import connections

from . import conf, eventlog, retention, sql
from .backoff import Backoff
from .broadcast import BroadcastDelivery
from .channel import BaseChannel
from .connection import CONNECTION_ERRORS, check_migrated, configuration_error, conninfo_params
from .connector import execute, send_last
from .delivery import split_notifies
from .durable import DurableDelivery
from .exceptions import ChannelNotFound, DatabaseConfigurationError
from .observe import observers
from .positions import Position
from .registry import registry
from .selfpipe import Waker
from .server_version import check_server_version
from .wakeups import BusyPoll, Sleep, wake_key

logger = logging.getLogger("pgpubsub")


class Worker:
    """Listens on channels and dispatches their notifications to the listeners."""

    def __init__(
        self,
        channels: Sequence[type[BaseChannel]] | None = None,
        *,
        using: str | None = None,
        on_connected: Callable[[str, Sequence[type[BaseChannel]]], None] | None = None,
    ) -> None:
        """``on_connected(using, channels)`` runs after each (re)connection and catch-up,
        before the worker serves: ``manage.py listen`` passes
        :func:`pgpubsub.drift.log_warnings` there."""
        self.using = using or conf.database_alias()
        self.on_connected = on_connected
        selected = list(channels) if channels else list(registry)
        if not selected:
            raise ChannelNotFound(
                "<any>",
                "no listeners are registered; declare them in a listeners.py of an installed app",
            )
        self.channels = selected
        self.by_db_name = {channel.listen_safe_name(): channel for channel in selected}
        self.durable = [channel for channel in selected if channel.lock_notifications]
        # Channels whose events the worker reads from the event tables.
        self.streams = [channel for channel in selected if not channel.lock_notifications]
        self.tables = eventlog.tables(self.streams)
        #: Where the worker stands in the event tables (set at the first connection).
        self.position: Position | None = None
        self.sleep = Sleep()
        self.busy = BusyPoll()
        self._next_trim = 0.0
        self._read_since_trim = False
        self.poll_interval = conf.poll_interval()
        self.batch_size = conf.batch_size()
        self.broadcast_delivery = BroadcastDelivery(self.using)
        self.durable_delivery = DurableDelivery(self.using)
        # A heap of the monotonic times at which the retries scheduled by
        # this worker's drains fall due, so that each one is looked for on time.
        self._retries_due: list[float] = []
        self.stopping = False
        self.listen_conn: psycopg.Connection[Any] | None = None
        # NOTIFYs taken from the connection by _wait() and not handled yet.
        self._in_hand: list[psycopg.Notify] = []
        # Opened by run(): a worker that is built but never run holds no pipe.
        self._waker: Waker | None = None
        self._next_sweep = 0.0

    # -- lifecycle ---------------------------------------------------------

    def stop(self, *_: Any) -> None:
        """Ask the worker to finish the batch in hand and return from :meth:`run`."""
        self.stopping = True
        if self._waker is not None:
            self._waker.wake()

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
        backoff = Backoff(0.2, 15.0, jitter=True)
        waker = self._waker = Waker()
        self._names = ", ".join(channel.name() for channel in self.channels)
        connected = False
        with handlers:
            try:
                while not self.stopping:
                    try:
                        self._connect()
                        connected = True
                        self._catch_up()
                        if self.on_connected is not None:
                            self.on_connected(self.using, self.channels)
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
                        reason = configuration_error(exc)
                        if not connected and reason is not None:
                            raise DatabaseConfigurationError(self.using, reason) from exc
                        delay = backoff.next()
                        logger.warning(
                            "pgpubsub: database connection lost (%s); reconnecting in %.1fs"
                            if connected
                            else "pgpubsub: cannot connect to the database (%s); retrying in %.1fs",
                            str(exc).strip() or type(exc).__name__,
                            delay,
                        )
                        self._close()
                        for observer in observers():
                            observer.connection_changed(False)
                        waker.wait(timeout=delay)
            finally:
                self._close()
                waker.close()
        logger.info("pgpubsub: worker %d stopped", os.getpid())

    def _connect(self) -> None:
        # LISTEN before anything else: whatever commits from here on is either
        # announced on this connection or found by the catch-up that follows.
        conn = psycopg.Connection.connect(**conninfo_params(self.using), autocommit=True)
        self.listen_conn = conn
        with conn.cursor() as cursor:
            check_server_version(cursor)
        check_migrated(conn, self.using)
        # Its keys in the wake-up protocol went with the old connection.
        self.sleep.forget()
        for db_name in self.by_db_name:
            conn.execute(sql.listen(db_name))
        if self.position is None:
            # A worker serves the events committed from its start on; after
            # a reconnection it carries on from where it was.
            with conn.cursor() as cursor:
                self.position = execute(cursor, eventlog.checkpoint()).position
        connections[self.using].close()

    def _close(self) -> None:
        if self.listen_conn is not None:
            idle = self.listen_conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            if self.sleep.held and idle:
                # Readers that rely on this worker's keys would otherwise
                # sleep until their next poll.
                with contextlib.suppress(Exception):
                    send_last(self.listen_conn, eventlog.hand_over(sorted(self.sleep.held)))
            self.sleep.forget()
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
        """Read and deliver while there is work; sleep on the socket once caught up.

        While events keep coming, the worker keeps reading the tables: a
        writer NOTIFYs only when a reader may be asleep, so a busy worker
        gets no wake-ups. Once it has caught up it asks to sleep
        (:mod:`pgpubsub.wakeups`): if writers are in flight it reads again
        shortly; otherwise it reads once more, then waits on its socket.
        """
        conn = self.listen_conn
        assert conn is not None
        asleep = False
        while not self.stopping:
            delivered = self._take_notifies(conn)
            beyond = more = False
            if self.streams:
                read = self._read_streams(conn)
                delivered = delivered or bool(read.rows)
                more = bool(read.rows) and not read.caught_up
                beyond = read.beyond
            if self.durable:
                delivered = self._drain_due() or delivered
            self._maybe_trim(conn)
            if self.stopping:
                break
            if more:
                continue
            if delivered:
                # Caught up: ask to sleep now rather than read once more first.
                asleep = False
                self.busy.reset()
            if beyond:
                # Events wait behind an older transaction still running, and
                # its commit may wake nobody: read again shortly, asleep or not.
                self._wait(conn, self.busy.next())
                continue
            if not delivered and asleep and self.sleep.covers(self.by_db_name):
                self.busy.reset()
                self._wait(conn, self._idle_timeout())
                asleep = False
                continue
            asked = self.sleep.to_request(self.by_db_name)
            if asked:
                keys = [wake_key(name) for name in asked]
                with conn.cursor() as cursor:
                    answer = execute(cursor, eventlog.ask_to_sleep(keys))
                if self.sleep.answered(asked, answer):
                    self._wait(conn, self.busy.next())
                    continue
            # What writers committed before the keys were taken is visible
            # now: read once more; later writers wake us.
            asleep = True

    def _wait(self, conn: psycopg.Connection[Any], timeout: float | None) -> None:
        """Wait for a NOTIFY, a signal or ``timeout``, unless a NOTIFY is already in hand.

        The server sends the NOTIFYs that arrive while one of the worker's
        statements runs before that statement's end, and psycopg keeps them:
        the socket is quiet afterwards, and waiting on it would sleep
        through a wake-up already received.
        """
        if not self._in_hand:
            self._in_hand = list(conn.notifies(timeout=0))
        if not self._in_hand:
            assert self._waker is not None
            self._waker.wait([conn.fileno()], timeout)

    def _idle_timeout(self) -> float | None:
        """How long the worker may wait on its socket once asleep."""
        due = math.inf
        if self.durable:
            due = min(self._next_sweep, self._next_retry())
        if self.sleep.relying:
            # A killed holder wakes nobody: check it is still there now and then.
            due = min(due, time.monotonic() + self.poll_interval)
        if self._read_since_trim:
            due = min(due, self._next_trim)
        return None if due == math.inf else max(0.0, due - time.monotonic())

    def _take_notifies(self, conn: psycopg.Connection[Any]) -> bool:
        """Handle the NOTIFYs received; return whether they carried events to deliver.

        A NOTIFY on a channel whose key this worker holds makes it give the
        key back. Messages with events (from the SQL of version 1 or from
        django-pgpubsub 1.3.1) are delivered; wake-ups need nothing more:
        the worker reads the tables next.
        """
        notifies = self._receive(conn)
        if not notifies:
            return False
        release = [
            wake_key(name) for name in {n.channel for n in notifies} if self.sleep.woken(name)
        ]
        if release:
            with conn.cursor() as cursor:
                execute(cursor, eventlog.give_back(release))
        broadcast, _durable = split_notifies(notifies, self.by_db_name.get)
        if broadcast:
            self.broadcast_delivery.deliver(broadcast)
        return bool(broadcast)

    def _read_streams(self, conn: psycopg.Connection[Any]) -> eventlog.LogRead:
        """Read and deliver the next events of the worker's broadcast and retained channels."""
        assert self.position is not None
        with conn.cursor() as cursor:
            read = execute(cursor, eventlog.read(self.tables, self.position, self.batch_size))
        if read.rows:
            self._read_since_trim = True
            self.broadcast_delivery.deliver_rows(
                [(self.by_db_name[row.channel], row) for row in read.rows]
            )
        self.position = read.position
        return read

    def _drain_due(self) -> bool:
        """Drain the durable channels (with their retries when a sweep is due); whether any ran."""
        now = time.monotonic()
        if now >= min(self._next_sweep, self._next_retry()):
            return self._sweep()
        return self._drain(self.durable, retries=False)

    def _maybe_trim(self, conn: psycopg.Connection[Any]) -> None:
        """Delete expired events now and then, after the worker has read some."""
        if not self._read_since_trim or time.monotonic() < self._next_trim:
            return
        self._next_trim = time.monotonic() + retention.TRIM_INTERVAL_SECONDS
        self._read_since_trim = False
        retention.trim(conn)

    def _receive(self, conn: psycopg.Connection[Any]) -> list[psycopg.Notify]:
        """The notifications already received, without waiting for more.

        One read of the socket holds only part of a busy transaction's
        NOTIFYs (about 16 kB); reading on while more are already there, up
        to ``PGPUBSUB_BATCH_SIZE`` messages, makes bigger batches, and so
        fewer of the worker's transactions, without delaying any.
        """
        received, self._in_hand = self._in_hand, []
        received += conn.notifies(timeout=0)
        while received and len(received) < self.batch_size:
            more = list(conn.notifies(timeout=0))
            if not more:
                break
            received += more
        return received

    # -- delivery ----------------------------------------------------------

    def _stopping(self) -> bool:
        return self.stopping

    def _next_retry(self) -> float:
        """The monotonic time of the earliest retry scheduled and not yet looked for."""
        return self._retries_due[0] if self._retries_due else math.inf

    def _drain(self, channels: Sequence[type[BaseChannel]], *, retries: bool) -> bool:
        """Drain ``channels``; return whether any notification was claimed."""
        drained = self.durable_delivery.drain(
            channels, batch_size=self.batch_size, stopping=self._stopping, retries=retries
        )
        for due in drained.retries:
            heapq.heappush(self._retries_due, due)
        return drained.claimed > 0

    def _sweep(self) -> bool:
        """Drain the durable channels with their due retries; whether any notification ran."""
        now = time.monotonic()
        self._next_sweep = now + self.poll_interval
        # Only the retries due now are taken by this drain; later ones keep
        # their time, so a sweep between a failure and its retry never delays it.
        while self._retries_due and self._retries_due[0] <= now:
            heapq.heappop(self._retries_due)
        return self._drain(self.durable, retries=True)
