"""``deliver()``: run the listeners of what a test published, in the test's own thread.

A worker reads events only once every older transaction has ended and
claims stored notifications that have committed. A test wants its
listeners run now, on what it just wrote, committed or not. A
:class:`Deliverer` reads the rows written since it started
(:mod:`pgpubsub.testing.reading`) and hands them to the worker's own
deliveries, so listeners are called exactly as in ``manage.py listen``:

* broadcast and retained channels: the new event-table rows go to
  :meth:`pgpubsub.broadcast.BroadcastDelivery.deliver_rows` (the rows stay:
  they are what every reader reads);
* durable channels: the new stored notifications are drained from the
  outbox by :meth:`pgpubsub.durable.DurableDelivery.drain`, claimed,
  run and deleted in one transaction (a savepoint inside a ``TestCase``),
  or failed and kept for a retry as a worker keeps them.

It delivers in rounds: a round takes every event published so far and not
yet delivered; the events its listeners publish make the next round. It
stops when a round finds nothing, and raises :class:`DeliveryLoopError`
after ``max_rounds`` rounds that all found something (a listener that
publishes on a channel it listens to never settles).

Listener failures are handled as a worker handles them (logged, a durable
notification retried or dead-lettered, the other listeners still run),
and then, with ``raise_errors`` (the default), the first one is raised to
the test when the delivery is over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

from .. import conf
from ..broadcast import BroadcastDelivery
from ..channel import BaseChannel, locate_channel
from ..delivery import Delivery
from ..durable import DurableDelivery
from ..exceptions import ChannelNotFound, PgpubsubError
from ..registry import registered_channels
from .capturing import collect_open
from .reading import NewRows

#: Rounds a delivery may take before it is called a loop.
MAX_ROUNDS = 100


class DeliveryLoopError(PgpubsubError, RuntimeError):
    """Listeners kept publishing events that they, or others, listen to.

    ``rounds`` is how many rounds of delivery ran; ``channels`` the dotted
    paths of the channels that still had events to deliver after the last one.
    """

    def __init__(self, rounds: int, channels: list[str]) -> None:
        self.rounds = rounds
        self.channels = channels
        super().__init__(
            f"listeners were still publishing after {rounds} rounds of delivery, on "
            f"{', '.join(channels)}; a listener that publishes on a channel it listens to "
            "(directly or through other listeners) never settles. Raise max_rounds if the "
            "chain is meant to be that long."
        )


class _RecordsFailures(Delivery):
    """A delivery that also keeps each listener failure it hands back."""

    failures: list[BaseException]

    def in_savepoint(self, run: Callable[..., None], *args: Any) -> BaseException | None:
        error = super().in_savepoint(run, *args)
        if error is not None:
            self.failures.append(error)
        return error


class _Broadcasts(_RecordsFailures, BroadcastDelivery):
    pass


class _Stored(_RecordsFailures, DurableDelivery):
    pass


class Deliverer:
    """Runs the listeners of what was published since it started: what :func:`deliver` returns.

    Call it to deliver at once; as a context manager it also delivers when
    its block ends without an exception.
    """

    def __init__(
        self,
        channels: Sequence[type[BaseChannel]],
        using: str,
        *,
        raise_errors: bool = True,
        max_rounds: int = MAX_ROUNDS,
        outbox_after: int | None = None,
    ) -> None:
        if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
            raise ValueError(f"max_rounds must be an integer >= 1, got {max_rounds!r}")
        self.using = using
        self.raise_errors = raise_errors
        self.max_rounds = max_rounds
        self.channels = list(channels)
        self._outbox_after = outbox_after
        self._by_name: dict[str, type[BaseChannel]] = {}
        for channel in self.channels:
            self._by_name[channel.listen_safe_name()] = channel
        self._durable = [channel for channel in self.channels if channel.lock_notifications]
        self._durable_names = [channel.listen_safe_name() for channel in self._durable]
        # django-pgpubsub 1.3.1's notify() stored rows under the dotted path.
        self._durable_names += [channel.name() for channel in self._durable]
        self._rows: NewRows | None = None
        #: Every listener failure so far, in order (raised or not).
        self.failures: list[BaseException] = []
        #: How many events its calls have delivered.
        self.delivered = 0

    def start(self) -> Deliverer:
        """Take the starting point: what is published from now on is delivered."""
        if self._rows is not None:
            raise RuntimeError("this deliverer has started already; start another with deliver()")
        self._rows = NewRows(self.using)
        if self._outbox_after is None:
            self._outbox_after = self._rows.outbox_start
        return self

    def __enter__(self) -> Deliverer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        # After a failure in the block, delivering could only hide it.
        if exc_type is None:
            self()

    def __call__(self) -> int:
        """Run the listeners of everything published and not yet delivered; return how many events.

        Raises the first listener failure with ``raise_errors``, once every
        event has been delivered, and :class:`DeliveryLoopError` when
        listeners keep publishing for ``max_rounds`` rounds.
        """
        rows = self._rows
        if rows is None:
            raise RuntimeError(
                "start the deliverer first: `with pgpubsub.testing.deliver() as deliver_now:`"
            )
        assert self._outbox_after is not None
        broadcasts, stored = _Broadcasts(self.using), _Stored(self.using)
        failures: list[BaseException] = []
        broadcasts.failures = stored.failures = failures
        delivered = 0
        rounds = 0
        while True:
            collect_open(self.using)
            events = rows.events(self.channels)
            due = rows.due(self._durable_names, self._outbox_after)
            if not events and not due:
                break
            if rounds == self.max_rounds:
                waiting = {self._by_name[row.channel] for row in events}
                waiting |= {self._channel(name) for name in due}
                raise DeliveryLoopError(rounds, sorted(channel.name() for channel in waiting))
            rounds += 1
            # Durable first: a claim deletes rows, and only the ones counted
            # (and seen by the open captures) are below the rows that this
            # round's listeners publish, so the limit takes just those.
            claimed = 0
            if due:
                claimed = stored.drain(
                    self._durable, after=self._outbox_after, limit=sum(due.values())
                ).claimed
            if events:
                broadcasts.deliver_rows([(self._by_name[row.channel], row) for row in events])
            if not events and not claimed:
                # Due notifications that no claim takes: a listener filter
                # leaves them out, or another session holds them.
                break
            delivered += len(events) + claimed
        self.delivered += delivered
        self.failures += failures
        if failures and self.raise_errors:
            raise failures[0]
        return delivered

    def _channel(self, name: str) -> type[BaseChannel]:
        found = self._by_name.get(name)
        return found if found is not None else locate_channel(name)


def deliver(
    *channels: type[BaseChannel] | str,
    using: str | None = None,
    raise_errors: bool = True,
    max_rounds: int = MAX_ROUNDS,
) -> Deliverer:
    """Run the listeners of what the block publishes, when it ends::

        with pgpubsub.testing.deliver():
            Author.objects.create(name="Ann")
        # the listeners of AuthorChannel have run

    Or call what it returns to deliver at once (``deliver_now()`` below)::

        with pgpubsub.testing.deliver() as deliver_now:
            Author.objects.create(name="Ann")
            deliver_now()
            ...

    ``channels`` (classes or dotted paths, with their subclasses that have
    listeners; default: every channel with a listener) narrows what is
    delivered. ``using`` is the database alias (default
    ``PGPUBSUB_DATABASE``). It works with or without a commit: inside a
    ``TestCase`` the listeners run in the test's transaction, as if it had
    committed.

    Events the listeners publish are delivered too, round after round,
    until none is left; :class:`DeliveryLoopError` after ``max_rounds``
    rounds. A listener failure is handled as a worker handles it, and with
    ``raise_errors`` the first one is raised when the delivery is over.
    Nothing is delivered when the block raises.
    """
    located = None if not channels else [locate_channel(channel) for channel in channels]
    selected = registered_channels(located)
    if not selected:
        raise ChannelNotFound(
            ", ".join(channel.name() for channel in located) if located else "<any>",
            "no listeners are registered on it",
        )
    return Deliverer(
        selected,
        using or conf.database_alias(),
        raise_errors=raise_errors,
        max_rounds=max_rounds,
    )
