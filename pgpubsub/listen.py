"""django-pgpubsub 1.3.1 compatibility: ``pgpubsub.listen``.

``listen()`` runs a worker in the calling process. ``listen_to_channels()``
and ``process_notifications()`` are the pair that 1.3.1's own tests, and
many users' test suites, drive by hand: LISTEN on the Django connection,
write something, then deliver what was published since, synchronously
and in the calling thread. They are thin wrappers over
:func:`pgpubsub.testing.deliver` (a :class:`~pgpubsub.testing.Deliverer`
started when the channels are listened to), so delivery follows the same
rules as in ``manage.py listen``; new tests can use :mod:`pgpubsub.testing`
directly.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any, ClassVar

import psycopg
from django.db import connections, transaction

from . import conf, eventlog, sql
from .broadcast import BroadcastDelivery
from .channel import BaseChannel, locate_channel
from .connection import conninfo_params
from .connector import execute
from .delivery import split_notifies
from .drift import log_warnings
from .durable import DurableDelivery
from .exceptions import ChannelNotFound
from .registry import channel_for_db_name, registered_channels
from .testing.delivering import Deliverer
from .wakeups import wake_key
from .worker import Worker

#: django-pgpubsub 1.3.1's loop flag. Tests patch it to ``False`` so that
#: ``listen(recover=True)`` processes the stored notifications and returns
#: instead of serving until it is stopped.
POLL = True

ChannelRefs = Sequence[type[BaseChannel] | str] | None


def _selected(channels: ChannelRefs) -> list[type[BaseChannel]]:
    """The channels with listeners among ``channels`` and their subclasses (default: all)."""
    if channels is None:
        return registered_channels()
    return registered_channels([locate_channel(channel) for channel in channels])


def listen(
    channels: ChannelRefs = None,
    recover: bool = False,
    autorestart_on_failure: bool = True,
    start_method: str = "spawn",
) -> None:
    """Run a worker in this process until SIGTERM/SIGINT.

    ``channels`` (classes or dotted paths; default: every channel with a
    listener) includes their subclasses that have listeners, as in 1.3.1.
    ``recover``, ``autorestart_on_failure`` and ``start_method`` are accepted
    for compatibility: a worker always processes the stored notifications at
    start-up, and reconnects by itself after a connection failure.

    With :data:`POLL` set to ``False`` it returns at once instead, after
    processing the stored notifications of the durable channels if
    ``recover`` is true (1.3.1's behaviour, which tests rely on).
    """
    selected = _selected(channels)
    if not selected:
        raise ChannelNotFound(channels or "<any>", "no listeners are registered on it")
    if POLL:
        Worker(selected, on_connected=log_warnings).run()
        return
    durable = [channel for channel in selected if channel.lock_notifications]
    if recover and durable:
        DurableDelivery(conf.database_alias()).drain(durable)


class ListeningConnection:
    """The Django connection LISTENing on channels, and what it has received.

    Returned by :func:`listen_to_channels`. ``notifies`` is a plain list of
    :class:`psycopg.Notify` (channel, payload, pid) that grows whenever the
    connection runs a statement; tests may empty or replace it.

    Writers NOTIFY only when a reader of the channel may be asleep
    (:mod:`pgpubsub.wakeups`). So that every write still NOTIFYs this
    connection, as django-pgpubsub 1.3.1's triggers did, a second session
    holds the channels' keys as a sleeping reader would, until :meth:`stop`,
    until this object is dropped, or until the Django connection closes,
    whichever comes first: it never outlives the connection it serves, so a
    test database can be dropped after a test that never called
    :meth:`stop`. The NOTIFYs are wake-ups: the events themselves are in the
    event tables and the outbox, where :func:`process_notifications` reads
    them (through :attr:`deliverer`).
    """

    def __init__(
        self, connection: psycopg.Connection[Any], channels: list[type[BaseChannel]], using: str
    ) -> None:
        self.connection = connection
        self.notifies: list[psycopg.Notify] = []
        self.channels = channels
        self.using = using
        #: The :class:`pgpubsub.testing.Deliverer` that runs the listeners of
        #: what is published from now on (and of every stored notification of
        #: the durable channels, as before).
        self.deliverer = Deliverer(channels, using, raise_errors=False, outbox_after=0).start()
        keys = sorted({wake_key(channel.listen_safe_name()) for channel in channels})
        self._holder = _KeyHolder.share(using, keys, listener=connection)
        self._release = weakref.finalize(self, self._holder.leave)
        connection.add_notify_handler(self._received)

    def _received(self, notify: psycopg.Notify) -> None:
        self.notifies.append(notify)

    def poll(self) -> None:
        """Collect the notifications that reached the connection since it last ran a statement."""
        self.connection.execute(sql.PING)

    def stop(self) -> None:
        """Stop collecting notifications (the connection keeps LISTENing)."""
        self.connection.remove_notify_handler(self._received)
        if self._release():
            self._holder.join()


#: The ``application_name`` of the sessions that hold keys for
#: :func:`listen_to_channels` (never counted as workers).
HOLDER_APPLICATION_NAME = "pgpubsub-listen-to-channels"


class _KeyHolder:
    """A session holding channels' keys for a LISTENing Django connection, while it lasts.

    The Django connection takes a session lock of its own
    (:data:`pgpubsub.sql.LISTENER_LOCK_CLASS`); a thread then waits for that
    lock on the holder's session, which it gets only once the Django
    connection has closed, and closes the holder. :meth:`release` cancels
    the wait instead (``cancel()`` is safe from any thread, a finalizer
    included), with the same end.

    The :func:`listen_to_channels` calls of one Django connection on the
    same channels share one holder, released when the last of them stops:
    a suite that calls it in every test on one connection, and never
    :meth:`ListeningConnection.stop`, opens one session, not one per test.
    """

    _shared: ClassVar[dict[tuple[int, int, tuple[int, ...]], _KeyHolder]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    @classmethod
    def share(cls, using: str, keys: list[int], listener: psycopg.Connection[Any]) -> _KeyHolder:
        """The live holder of ``keys`` for ``listener``, or a new one; counted as one more user."""
        name = (id(listener), listener.info.backend_pid, tuple(keys))
        with cls._lock:
            for gone in [k for k, held in cls._shared.items() if not held.alive()]:
                del cls._shared[gone]
            holder = cls._shared.get(name)
            if holder is None:
                holder = cls._shared[name] = cls(using, keys, listener)
            holder.users += 1
            return holder

    def leave(self) -> bool:
        """One user fewer; release the session after the last. Whether it was released."""
        with self._lock:
            self.users -= 1
            if self.users > 0:
                return False
        self.release()
        return True

    def __init__(self, using: str, keys: list[int], listener: psycopg.Connection[Any]) -> None:
        self.users = 0
        with listener.cursor() as cursor:
            cursor.execute(sql.TAKE_LISTENER_LOCK, [sql.LISTENER_LOCK_CLASS])
            row = cursor.fetchone()
            assert row is not None
            listener_pid = int(row[1])
        params = {**conninfo_params(using), "application_name": HOLDER_APPLICATION_NAME}
        self.conn = psycopg.connect(**params, autocommit=True)
        try:
            with self.conn.cursor() as cursor:
                execute(cursor, eventlog.ask_to_sleep(keys))
                cursor.execute(sql.NO_TIMEOUTS)
        except BaseException:
            self.conn.close()
            raise
        self._released = threading.Event()
        self._closing = threading.RLock()
        self._thread = threading.Thread(
            target=self._hold, args=(listener_pid,), name="pgpubsub-key-holder", daemon=True
        )
        self._thread.start()

    def _hold(self, listener_pid: int) -> None:
        try:
            if not self._released.is_set():
                self.conn.execute(sql.WAIT_FOR_LISTENER, [sql.LISTENER_LOCK_CLASS, listener_pid])
        except psycopg.Error:
            pass  # cancelled by release(), or the server went away
        finally:
            with self._closing:
                self.conn.close()

    def alive(self) -> bool:
        return self._thread.is_alive() and not self._released.is_set()

    def release(self) -> None:
        """End the holder's session soon (from any thread)."""
        self._released.set()
        # Never on a connection the thread is closing or has closed.
        with self._closing, contextlib.suppress(psycopg.Error):
            if not self.conn.closed:
                self.conn.cancel_safe(timeout=5)

    def join(self, timeout: float = 5.0) -> None:
        """Wait until the holder's session has closed, cancelling its wait again if needed."""
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            # A cancel that came before the wait began ended nothing.
            self.release()
            self._thread.join(0.05)


def listen_to_channels(
    channels: ChannelRefs = None, *, using: str | None = None
) -> ListeningConnection:
    """LISTEN on ``channels`` on the Django connection and return it wrapped.

    ``channels`` are classes or dotted paths and include their subclasses
    with listeners (default: every channel with a listener), as in
    django-pgpubsub 1.3.1. ``using`` is the database alias (default
    ``PGPUBSUB_DATABASE``).

    Pass the result to :func:`process_notifications` to run the listeners
    of what was published since. That works in any test, ``TestCase``
    included. The ``notifies`` list of the result, however, fills only as
    transactions commit: the LISTEN statements themselves take effect when
    theirs commits, so in a ``TestCase`` (or inside
    ``transaction.atomic()``) it stays empty.
    """
    selected = _selected(channels)
    if not selected:
        raise ChannelNotFound(channels or "<any>", "no listeners are registered on it")
    alias = using or conf.database_alias()
    connection = connections[alias]
    with transaction.atomic(using=alias), connection.cursor() as cursor:
        for channel in selected:
            cursor.execute(sql.listen(channel.listen_safe_name()))
    return ListeningConnection(connection.connection, selected, alias)


def process_notifications(listening: ListeningConnection, *, using: str | None = None) -> None:
    """Run the listeners of everything published on ``listening``'s channels since, then return.

    A thin wrapper over ``listening.deliverer``, a
    :class:`pgpubsub.testing.Deliverer`: broadcast and retained channels'
    events written since :func:`listen_to_channels` are delivered from the
    event tables, committed or not; durable channels' stored notifications
    are processed as a worker would (claimed, run, deleted in one
    transaction; a failure is logged and retried later, up to
    ``PGPUBSUB_MAX_ATTEMPTS``, and not raised here). Messages that arrived in
    NOTIFY payloads (from the SQL of version 1 or django-pgpubsub 1.3.1) are
    delivered from them. What the listeners publish in turn is processed
    too, until nothing is left (:class:`pgpubsub.testing.DeliveryLoopError`
    if they never stop). ``PGPUBSUB_LISTENER_FILTER`` and the other settings
    are read on each call. ``using``, if given, must be the database
    ``listening`` was opened on.
    """
    if using is not None and using != listening.using:
        raise ValueError(
            f"process_notifications(using={using!r}) was given a connection listening on "
            f"{listening.using!r}; leave out using= or pass {listening.using!r}"
        )
    broadcasts = BroadcastDelivery(listening.using)
    while True:
        listening.poll()
        received, listening.notifies = listening.notifies, []
        messages, _woken = split_notifies(received, channel_for_db_name)
        if messages:
            broadcasts.deliver(messages)
        if not listening.deliverer() and not messages:
            return
