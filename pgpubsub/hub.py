"""The subscription hub: one per process and event loop, behind :func:`pgpubsub.subscribe`.

The hub holds one psycopg ``AsyncConnection``. On it, it LISTENs on the
channels its subscribers want and reads their events from the event tables
(the event log of retained channels, the broadcast table of the others) by
position, in commit-safe order (:mod:`pgpubsub.positions`). It decodes each
event once and puts it on the bounded queue of every subscriber of its
channel. While it finds events it keeps reading; when it has caught up it
goes to sleep through the wake-up protocol (:mod:`pgpubsub.wakeups`) and
waits on its socket.

A subscriber resuming from an older position (``since=``) first replays
what lies between its position and the hub's on a connection of its own,
while the hub keeps the events that arrive meanwhile for it; the two meet
at the hub's position, with no gap and no duplicate.

A subscriber that does not keep up (its queue is full) is cut off: its
iterator raises :class:`pgpubsub.SubscriberTooSlow` with the id of the last
event it received, from which it can resume. A lost connection is
re-established with backoff; subscribers of retained channels never notice,
the others are told that events may have been missed
(:class:`pgpubsub.EventsMayBeMissed`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import functools
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

import psycopg
from asgiref.sync import sync_to_async

from . import conf, eventlog, retention, sql
from .backoff import Backoff
from .channel import BaseChannel, Channel, TriggerChannel, locate_channel
from .connection import conninfo_params
from .connector import AsyncConnector, SyncConnector
from .exceptions import (
    CheckpointExpired,
    EventsMayBeMissed,
    PgpubsubError,
    SubscriberTooSlow,
    SubscriptionEnded,
    SubscriptionError,
)
from .positions import Position
from .registry import listeners_for
from .wakeups import BusyPoll, Sleep, wake_key
from .wire import Event as WireEvent
from .wire import event_decoder

logger = logging.getLogger("pgpubsub")

#: The ``application_name`` of hub connections.
HUB_APPLICATION_NAME = "pgpubsub-hub"

#: Seconds between looks at the tables while asleep holding the keys: the
#: protocol loses no wake-up, so this is only a last line of defence.
SAFETY_POLL_SECONDS = 60.0
#: How long a closing hub waits to hand its keys over to other readers.
HAND_OVER_TIMEOUT = 2.0


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One event as :func:`pgpubsub.subscribe` yields it.

    One object is shared by every subscriber of the process: do not modify it.
    """

    #: The event's position, an opaque string; pass it as ``since`` to resume after it.
    id: str
    #: The channel class.
    channel: type[BaseChannel]
    #: ``"INSERT"``, ``"UPDATE"`` or ``"DELETE"`` for trigger channels, else ``None``.
    op: str | None
    #: What a listener of the channel receives (``old`` and ``new`` model
    #: instances, or the channel's typed fields).
    kwargs: dict[str, Any]
    #: The trigger that published it (``"after_insert"``, ... or a custom
    #: trigger's name), else ``None``.
    trigger: str | None
    #: The notification context, if one was set.
    context: dict[str, Any] | None
    #: When the event was written (seconds since the epoch).
    created_at: float
    #: The event as stored, before decoding, with rows and fields still JSON;
    #: browser streams and bridges (:doc:`/live`) encode from it without
    #: touching the models.
    wire: WireEvent | None = dataclasses.field(default=None, repr=False, compare=False)


def _kind_error(channel: type[BaseChannel]) -> str | None:
    """Why events of ``channel`` cannot be subscribed to, or None."""
    if channel.lock_notifications and not channel.retained():
        return (
            f"{channel.name()} is durable: workers consume its events from the outbox. "
            "Set `retention` on it to subscribe to its events as well."
        )
    if (
        issubclass(channel, TriggerChannel)
        and not channel.retained()
        and not listeners_for(channel)
    ):
        return (
            f"{channel.name()} has neither listeners nor `retention`, so no trigger "
            "publishes its events; set `retention` on it"
        )
    return None


class Subscriber:
    """One subscription's queue and position; iterate it with ``async for``.

    The queue is a deque that the hub appends to and the consumer pops from,
    both in the event loop's thread: no lock. A consumer with nothing to read
    waits on one future, which the next ``offer()`` (or the end of the
    subscription) completes. Delivering an event to a subscriber costs an
    append, and a consumer wakes once for everything that arrived meanwhile.
    """

    def __init__(self, hub: Hub, channels: list[type[BaseChannel]], max_queue: int) -> None:
        self.hub = hub
        self.channels = channels
        self.names = {channel.listen_safe_name(): channel for channel in channels}
        self.name_set = frozenset(self.names)
        self.max_queue = max_queue
        #: Events at or before this position are not for this subscriber.
        self.start = Position(0, 0)
        #: The last event handed to the caller (its id), for errors.
        self.last_id: str | None = None
        #: While replaying: events the hub read meanwhile, in order.
        self.held: collections.deque[tuple[Position, Event]] | None = None
        #: Why the subscription ended: builds the error, given the last id
        #: delivered, that the iterator raises once the queue is empty.
        self.ended: Callable[[str | None], PgpubsubError] | None = None
        self.retained_only = all(channel.retained() for channel in channels)
        #: The replay of a subscription with ``since``, while it runs.
        self.catching_up: asyncio.Task[None] | None = None
        self._queue: collections.deque[Event] = collections.deque()
        # The consumer's wait for an event, and a replay's wait for room.
        self._ready: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None
        # The timer of next_batch()'s timeouts. It outlives the wait that
        # armed it: a stream that waits for its next event "or a heartbeat
        # from now" would otherwise make and cancel a timer per event.
        self._timer: asyncio.TimerHandle | None = None

    def offer(self, position: Position, event: Event) -> None:
        """The hub has read an event of one of this subscriber's channels."""
        if self.ended is not None or position <= self.start:
            return
        if self.held is not None:
            if len(self.held) >= self.max_queue:
                self.fail(self._too_slow)
                return
            self.held.append((position, event))
            return
        if len(self._queue) >= self.max_queue:
            self.fail(self._too_slow)
            return
        self._queue.append(event)
        self._wake()

    def offer_many(self, batch: list[tuple[Position, Event]]) -> None:
        """:meth:`offer` for a batch of events in position order, with one wake-up."""
        if self.ended is not None or not batch:
            return
        if batch[0][0] <= self.start:
            batch = [pair for pair in batch if pair[0] > self.start]
            if not batch:
                return
        if self.held is not None:
            for position, event in batch:
                self.offer(position, event)
            return
        room = self.max_queue - len(self._queue)
        self._queue.extend([event for _, event in batch[:room]])
        self._wake()
        if len(batch) > room:
            self.fail(self._too_slow)

    async def put(self, event: Event) -> None:
        """Queue ``event``, waiting while the queue is full (a replay, not the hub, uses it)."""
        while len(self._queue) >= self.max_queue and self.ended is None:
            self._room = asyncio.get_running_loop().create_future()
            try:
                await self._room
            finally:
                self._room = None
        if self.ended is None:
            self._queue.append(event)
            self._wake()

    def _wake(self) -> None:
        ready = self._ready
        if ready is not None and not ready.done():
            ready.set_result(None)

    def _take(self, limit: int) -> list[Event]:
        queue = self._queue
        batch = [queue.popleft() for _ in range(min(limit, len(queue)))]
        if batch:
            self.last_id = batch[-1].id
            room = self._room
            if room is not None and not room.done():
                room.set_result(None)
        return batch

    async def _wait(self, timeout: float | None) -> None:
        """Wait until an event is queued, the subscription ends, or ``timeout`` passes."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if deadline is not None:
                timer = self._timer
                # A timer due before the deadline may stay: its wake-up only
                # makes this loop look again. One due later must be replaced.
                if timer is None or timer.when() > deadline:
                    if timer is not None:
                        timer.cancel()
                    self._timer = loop.call_at(deadline, self._time_out)
            ready = self._ready = loop.create_future()
            try:
                await ready
            finally:
                self._ready = None
            if self._queue or self.ended is not None or deadline is None or loop.time() >= deadline:
                return

    def _time_out(self) -> None:
        self._timer = None
        self._wake()

    def stop_timer(self) -> None:
        """Cancel the pending timeout timer (the subscription is over)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _too_slow(self, last_id: str | None) -> PgpubsubError:
        return SubscriberTooSlow(last_id, self.max_queue)

    def fail(self, ended: Callable[[str | None], PgpubsubError]) -> None:
        """End the subscription: the iterator yields what is queued, then raises.

        ``ended`` builds the error from the id of the last event delivered.
        """
        if self.ended is None:
            self.ended = ended
            self.hub.detach(self)
            self._wake()
            room = self._room
            if room is not None and not room.done():
                room.set_result(None)

    @property
    def start_id(self) -> str:
        """The position this subscription delivers events after, as an event id.

        Resuming from it (``since=``) gives what this subscription gives.
        """
        assert self.hub.tag is not None
        return self.start.encode(self.hub.tag)

    async def next_batch(self, limit: int, timeout: float | None = None) -> list[Event]:
        """The events waiting now (at least one, at most ``limit``), in order.

        Waits up to ``timeout`` seconds for the first one and returns an
        empty list if none came. A timeout or a cancellation never loses an
        event. Once the subscription has ended and its events are handed
        out, raises the error that ended it. Use either this or ``async
        for`` on a subscriber, not both.
        """
        if not self._queue:
            if self.ended is not None:
                raise self.ended(self.last_id)
            await self._wait(timeout)
            if not self._queue and self.ended is not None:
                raise self.ended(self.last_id)
        return self._take(limit)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        queue = self._queue
        while True:
            while queue:
                event = queue.popleft()
                self.last_id = event.id
                room = self._room
                if room is not None and not room.done():
                    room.set_result(None)
                yield event
            if self.ended is not None:
                raise self.ended(self.last_id)
            await self._wait(None)


class Hub:
    """Reads the event tables for the subscribers of one process and event loop."""

    def __init__(self, using: str) -> None:
        self.using = using
        self.params = {**conninfo_params(using), "application_name": HUB_APPLICATION_NAME}
        self.subscribers: set[Subscriber] = set()
        self._channels_now: dict[str, type[BaseChannel]] | None = None
        self.position: Position | None = None
        self.tag: str | None = None
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self.listening: set[str] = set()
        self.sleep = Sleep()
        self._changed = asyncio.Event()
        self._requests: collections.deque[
            tuple[Subscriber, str | None, asyncio.Future[Position | None]]
        ] = collections.deque()
        self._task: asyncio.Task[None] | None = None
        self._next_trim = 0.0

    # -- subscribers ---------------------------------------------------------

    async def attach(self, subscriber: Subscriber, since: str | None) -> None:
        """Add a subscriber; with ``since``, replay what it missed first.

        Only the hub's task uses the hub's connection (psycopg waits on its
        socket through the event loop, and so does the hub), so the
        subscriber is handed to the task, which answers with the position
        up to which the subscriber must replay, if any.
        """
        self._ensure_running()
        assert self._task is not None
        answer: asyncio.Future[Position | None] = asyncio.get_running_loop().create_future()
        self._requests.append((subscriber, since, answer))
        self._changed.set()
        waits: set[asyncio.Future[Any]] = {answer, self._task}
        done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        if answer not in done:
            answer.cancel()
            self._task.result()  # raises what stopped the hub
        target = answer.result()
        if target is None:
            return
        # Replay (start, target] on a connection of its own, holding back
        # what the hub reads meanwhile; the hub's position only moves on.
        # The replay runs beside the caller, who reads its events as they
        # come: a replay longer than the queue waits for its reader, so it
        # cannot run to its end before the caller starts reading.
        subscriber.catching_up = asyncio.get_running_loop().create_task(
            self._catch_up(subscriber, target), name="pgpubsub-replay"
        )

    async def _catch_up(self, subscriber: Subscriber, target: Position) -> None:
        try:
            await self._replay(subscriber, subscriber.start, target)
            # Then what the hub read meanwhile, waiting for the reader too;
            # the hub keeps adding to ``held`` (bounded) until it is empty.
            held = subscriber.held
            while held and subscriber.ended is None:
                _, event = held.popleft()
                await subscriber.put(event)
        except Exception as exc:
            logger.warning("pgpubsub: replaying events for a subscriber failed: %s", exc)
            subscriber.fail(
                functools.partial(SubscriptionEnded, message=f"replaying events failed: {exc}")
            )
            return
        subscriber.held = None
        subscriber.start = target

    async def _admit(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Answer the subscribers waiting in :meth:`attach` (in the hub's task)."""
        while self._requests:
            subscriber, since, answer = self._requests.popleft()
            if answer.done():
                continue
            try:
                target = await self._place(conn, subscriber, since)
            except Exception as exc:
                answer.set_exception(exc)
                continue
            self.subscribers.add(subscriber)
            self._channels_now = None
            answer.set_result(target)

    async def _place(
        self, conn: psycopg.AsyncConnection[Any], subscriber: Subscriber, since: str | None
    ) -> Position | None:
        """Set where a new subscriber starts; return where its replay must end, if it must."""
        assert self.position is not None and self.tag is not None
        connector = AsyncConnector(conn)
        if since is None:
            subscriber.start = (await connector.run(eventlog.checkpoint())).position
            return None
        start = Position.decode(since, self.tag)
        names = [c.listen_safe_name() for c in subscriber.channels if c.retained()]
        for name, trimmed in (await connector.run(eventlog.trimmed(names))).items():
            if start < trimmed:
                channel = subscriber.names[name]
                raise CheckpointExpired(channel.name(), since, trimmed.encode(self.tag))
        subscriber.start = start
        if start >= self.position:
            return None
        subscriber.held = collections.deque()
        return self.position

    def detach(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        self._channels_now = None
        self._changed.set()

    async def _replay(self, subscriber: Subscriber, start: Position, target: Position) -> None:
        by_table = eventlog.tables(subscriber.channels)
        position = start
        async with await psycopg.AsyncConnection.connect(**self.params, autocommit=True) as conn:
            connector = AsyncConnector(conn)
            while position < target and subscriber.ended is None:
                read = await connector.run(eventlog.read(by_table, position))
                for row in read.rows:
                    if row.position > target:
                        return
                    event = self._decode(row, subscriber.names)
                    position = row.position
                    if event is None:
                        continue
                    # A replay waits for its reader instead of failing it:
                    # nothing is held in memory here but this batch.
                    await subscriber.put(await _loaded(event))
                if read.caught_up:
                    return

    # -- the reading task ----------------------------------------------------

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="pgpubsub-hub")

    async def _run(self) -> None:
        backoff = Backoff(0.2, 15.0, jitter=True)
        connected_once = False
        try:
            while True:
                try:
                    await self._connect()
                    if connected_once:
                        self._reconnected()
                    connected_once = True
                    backoff.reset()
                    await self._serve()
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    if not connected_once:
                        raise
                    delay = backoff.next()
                    logger.warning(
                        "pgpubsub: subscription hub lost its connection (%s); "
                        "reconnecting in %.1fs",
                        str(exc).strip() or type(exc).__name__,
                        delay,
                    )
                    await self._close()
                    await asyncio.sleep(delay)
        except Exception as exc:
            logger.exception("pgpubsub: the subscription hub stopped")
            for subscriber in list(self.subscribers):
                subscriber.fail(
                    functools.partial(SubscriptionEnded, message=f"the hub stopped: {exc}")
                )
            raise
        finally:
            await self._close()

    def _reconnected(self) -> None:
        for subscriber in list(self.subscribers):
            if not subscriber.retained_only:
                subscriber.fail(EventsMayBeMissed)

    async def _connect(self) -> None:
        conn = await psycopg.AsyncConnection.connect(**self.params, autocommit=True)
        self.conn = conn
        self.listening = set()
        self.sleep.forget()
        now = await AsyncConnector(conn).run(eventlog.checkpoint())
        self.tag = now.tag
        if self.position is None:
            self.position = now.position

    async def _close(self) -> None:
        if self.conn is not None:
            idle = self.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            if self.sleep.held and idle:
                # Readers that rely on this hub's keys would otherwise sleep
                # until their next poll.
                hand_over = AsyncConnector(self.conn).run(
                    eventlog.hand_over(sorted(self.sleep.held))
                )
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(hand_over, HAND_OVER_TIMEOUT)
            self.sleep.forget()
            with contextlib.suppress(Exception):
                await self.conn.close()
            self.conn = None

    def _channels(self) -> dict[str, type[BaseChannel]]:
        """The channels of the subscribers, by name (kept until a subscriber comes or goes)."""
        found = self._channels_now
        if found is None:
            found = {}
            for subscriber in self.subscribers:
                found.update(subscriber.names)
            self._channels_now = found
        return found

    async def _serve(self) -> None:
        conn = self.conn
        assert conn is not None
        busy = BusyPoll()
        asleep = False
        while True:
            self._changed.clear()
            await self._admit(conn)
            channels = self._channels()
            for name in channels.keys() - self.listening:
                await conn.execute(sql.listen(name))
                self.listening.add(name)
            await self._take_notifies(conn)
            if not channels:
                asleep = False
                await self._wait(conn, None)
                continue
            read = await self._read(conn, channels)
            await self._maybe_trim(conn)
            if read.rows and not read.caught_up:
                continue
            if read.rows:
                # Caught up: ask to sleep now rather than read once more first.
                asleep = False
                busy.reset()
            if read.beyond:
                # Events wait behind an older transaction still running, and
                # its commit may wake nobody: read again shortly, asleep or not.
                await self._wait(conn, busy.next())
                continue
            if not read.rows and asleep and self.sleep.covers(channels):
                busy.reset()
                timeout = conf.poll_interval() if self.sleep.relying else SAFETY_POLL_SECONDS
                await self._wait(conn, timeout)
                asleep = False
                continue
            asked = self.sleep.to_request(channels)
            if asked:
                keys = [wake_key(name) for name in asked]
                answer = await AsyncConnector(conn).run(eventlog.ask_to_sleep(keys))
                if self.sleep.answered(asked, answer):
                    await self._wait(conn, busy.next())
                    continue
            # Read once more: what writers committed before the keys were
            # taken is visible now, and later writers will wake us.
            asleep = True

    async def _take_notifies(self, conn: psycopg.AsyncConnection[Any]) -> bool:
        """Handle the NOTIFYs already received; return whether there were any."""
        release = []
        got = False
        async for notify in conn.notifies(timeout=0):
            got = True
            if self.sleep.woken(notify.channel):
                release.append(wake_key(notify.channel))
        if release:
            await AsyncConnector(conn).run(eventlog.give_back(release))
        return got

    async def _wait(self, conn: psycopg.AsyncConnection[Any], timeout: float | None) -> None:
        """Wait until the socket has data, subscribers change, or ``timeout`` passes."""
        if await self._take_notifies(conn):
            return
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        fd = conn.fileno()
        loop.add_reader(fd, readable.set)
        try:
            waits = [
                asyncio.ensure_future(readable.wait()),
                asyncio.ensure_future(self._changed.wait()),
            ]
            try:
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
        finally:
            loop.remove_reader(fd)
        await self._take_notifies(conn)

    async def _read(
        self, conn: psycopg.AsyncConnection[Any], channels: dict[str, type[BaseChannel]]
    ) -> eventlog.LogRead:
        """Read the next events and offer each, decoded once, to its channel's subscribers."""
        assert self.position is not None
        read = await AsyncConnector(conn).run(
            eventlog.read(eventlog.tables(channels.values()), self.position)
        )
        decoded: list[tuple[Position, Event]] = []
        names_of: list[str] = []
        for row in read.rows:
            event = self._decode(row, channels)
            if event is not None:
                decoded.append((row.position, await _loaded(event)))
                names_of.append(row.channel)
        if decoded:
            # Each subscriber gets the batch's events of its channels at once:
            # one list per distinct set of channels, one wake-up per subscriber.
            batches: dict[frozenset[str], list[tuple[Position, Event]]] = {}
            for subscriber in list(self.subscribers):
                names = subscriber.name_set
                batch = batches.get(names)
                if batch is None:
                    batch = batches[names] = [
                        pair for pair, name in zip(decoded, names_of) if name in names
                    ]
                subscriber.offer_many(batch)
        self.position = read.position
        return read

    def _decode(self, row: eventlog.LogRow, channels: dict[str, type[BaseChannel]]) -> Event | None:
        """The event of a row, decoded once for every subscriber (None if undecodable)."""
        assert self.tag is not None
        position = row.position
        channel = channels.get(row.channel)
        if channel is None:
            return None
        try:
            wire = event_decoder.decode(row.payload)
            kwargs = _kwargs(channel, wire, self.using)
        except Exception as exc:
            logger.error(
                "pgpubsub: skipped an undecodable event on %s at %s (%s: %s)",
                channel.name(),
                position.encode(self.tag),
                type(exc).__name__,
                exc,
            )
            return None
        return Event(
            id=position.encode(self.tag),
            channel=channel,
            op=wire.op,
            kwargs=kwargs,
            trigger=wire.trigger,
            context=wire.context,
            created_at=row.created_at,
            wire=wire,
        )

    # -- retention cleanup ---------------------------------------------------

    async def _maybe_trim(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Run a round of retention cleanup when one is due (see :mod:`pgpubsub.retention`)."""
        now = time.monotonic()
        if now < self._next_trim:
            return
        self._next_trim = now + retention.TRIM_INTERVAL_SECONDS
        try:
            await retention.trim_async(conn)
        except psycopg.Error as exc:
            if self.conn is None or conn.broken:
                raise
            logger.warning("pgpubsub: retention cleanup failed: %s", exc)


def _kwargs(channel: type[BaseChannel], wire: Any, using: str) -> dict[str, Any]:
    """An event's ``kwargs``, decoded without I/O (model fields still to be loaded)."""
    if issubclass(channel, TriggerChannel):
        rows = channel.row_decoder()
        return {"old": rows.build(wire.old, using), "new": rows.build(wire.new, using)}
    if issubclass(channel, Channel):
        return channel.codec().decode(wire.kwargs)
    raise SubscriptionError(f"{channel.name()} is not a Channel or a TriggerChannel")


async def _loaded(event: Event) -> Event:
    """``event`` with the model instances its app channel's fields name, loaded."""
    channel = event.channel
    if not (issubclass(channel, Channel) and channel.codec().has_models):
        return event
    kwargs = await sync_to_async(channel.codec().resolve)(event.kwargs)
    return dataclasses.replace(event, kwargs=kwargs)


T = TypeVar("T")


class PerLoop(Generic[T]):
    """One ``T`` per running event loop and database alias, made on first use.

    An object bound to an event loop (its tasks, its connections) cannot
    serve another loop; one that outlives its loop is dropped with it.
    """

    def __init__(self, factory: Callable[[str], T]) -> None:
        self._factory = factory
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, T]] = (
            weakref.WeakKeyDictionary()
        )

    def get(self, using: str) -> T:
        """The object of the running event loop for the database ``using``."""
        objects = self._by_loop.setdefault(asyncio.get_running_loop(), {})
        found = objects.get(using)
        if found is None:
            found = objects[using] = self._factory(using)
        return found


_hubs: PerLoop[Hub] = PerLoop(Hub)


def hub_for(using: str) -> Hub:
    """The hub of the running event loop for the database ``using`` (created on first use)."""
    return _hubs.get(using)


class Subscription:
    """What :func:`pgpubsub.subscribe` returns: ``async with`` it to get the events."""

    def __init__(
        self,
        channels: tuple[type[BaseChannel] | str, ...],
        since: str | None,
        max_queue: int,
        using: str | None,
    ) -> None:
        if not channels:
            raise SubscriptionError("subscribe() needs at least one channel")
        located = list(dict.fromkeys(locate_channel(channel) for channel in channels))
        for channel in located:
            channel.validate()
            problem = _kind_error(channel)
            if problem:
                raise SubscriptionError(problem)
        if since is not None:
            missing = [channel.name() for channel in located if not channel.retained()]
            if missing:
                raise SubscriptionError(
                    f"since= needs channels that keep their events; {', '.join(missing)} "
                    "has no `retention`"
                )
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise SubscriptionError(f"max_queue must be an integer >= 1, got {max_queue!r}")
        self.channels = located
        self.since = since
        self.max_queue = max_queue
        self.using = using or conf.database_alias()
        self.subscriber: Subscriber | None = None

    async def __aenter__(self) -> Subscriber:
        hub = hub_for(self.using)
        subscriber = Subscriber(hub, self.channels, self.max_queue)
        await hub.attach(subscriber, self.since)
        self.subscriber = subscriber
        return subscriber

    async def __aexit__(self, *exc: object) -> None:
        if self.subscriber is not None:
            self.subscriber.hub.detach(self.subscriber)
            self.subscriber.stop_timer()
            if self.subscriber.catching_up is not None:
                self.subscriber.catching_up.cancel()
            self.subscriber = None

    def __enter__(self) -> None:
        raise TypeError(
            "pgpubsub.subscribe() is for async code: use `async with pgpubsub.subscribe(...)`"
        )

    def __exit__(self, *exc: object) -> None:  # pragma: no cover - __enter__ always raises
        return None


def subscribe(
    *channels: type[BaseChannel] | str,
    since: str | None = None,
    max_queue: int = 1000,
    using: str | None = None,
) -> Subscription:
    """Subscribe to channels' events from async code.

    ::

        async with pgpubsub.subscribe(AuthorChannel, since=checkpoint) as events:
            async for event in events:
                ...

    ``since`` (an :attr:`Event.id` or a :func:`checkpoint`) resumes after
    that position: every event of the channels committed after it, then live
    ones, with no gap and no duplicate; it needs channels with ``retention``.
    Without it, the events committed after the subscription starts.
    ``max_queue`` bounds the events waiting for this subscriber; past it the
    subscription ends with :class:`pgpubsub.SubscriberTooSlow`.
    """
    return Subscription(channels, since, max_queue, using)


__all__ = ["Event", "Subscription", "subscribe"]


def checkpoint(using: str | None = None) -> str:
    """The current position: every event committed from now on comes after it.

    Take it *before* reading the state a page or a client starts from, then
    ``subscribe(..., since=checkpoint)``: nothing that changes in between is
    missed. The price is that a few events may arrive that the state read
    already includes (those of transactions that were running when the
    checkpoint was taken and committed before the read): handle events
    idempotently (an update sets values, a delete of a missing row does
    nothing).
    """
    now = SyncConnector(using or conf.database_alias()).run(eventlog.checkpoint())
    return now.position.encode(now.tag)


async def acheckpoint(using: str | None = None) -> str:
    """:func:`checkpoint` for async code."""
    from asgiref.sync import sync_to_async

    return await sync_to_async(checkpoint)(using)
