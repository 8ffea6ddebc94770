"""``capture()``: the events a block of a test published, decoded, in order.

Events are rows (:mod:`pgpubsub.testing.reading`), so a capture reads the
rows written since it began and decodes each one as a listener would
receive it: ``old``/``new`` model instances for a trigger channel, the
typed fields for an app channel. It reads when the block ends, whenever the
test looks at it before that, and just before :func:`pgpubsub.testing.deliver`
runs listeners (whose durable claims delete the outbox rows it reads).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, overload

import msgspec

from .. import conf
from ..calling import listener_kwargs
from ..channel import BaseChannel, TriggerChannel, all_channel_classes, locate_channel
from ..exceptions import PayloadError
from ..wire import decode_stored_event, event_decoder, preview
from .reading import NewRows


@dataclasses.dataclass
class Published:
    """One event a captured block published, as its listeners receive it.

    Two events are equal when their channel, ``kwargs``, ``op``,
    ``trigger`` and ``context`` are; model instances compare by primary key,
    as Django's do.
    """

    #: The channel class.
    channel: type[BaseChannel]
    #: What a listener of the channel receives, ``{"old": ..., "new": ...}``
    #: (model instances or ``None``) for a trigger channel, the typed fields
    #: for an app channel.
    kwargs: dict[str, Any]
    #: ``"INSERT"``, ``"UPDATE"`` or ``"DELETE"`` for a trigger channel, else ``None``.
    op: str | None = None
    #: The trigger that published it (``"after_insert"``, ``"before_update"``
    #: and so on, or a custom trigger's name); ``None`` for an app channel.
    trigger: str | None = None
    #: The notification context, if one was set.
    context: dict[str, Any] | None = None

    @property
    def old(self) -> Any:
        """The row before the change (a trigger channel's ``kwargs["old"]``)."""
        return self._row("old")

    @property
    def new(self) -> Any:
        """The row after the change (a trigger channel's ``kwargs["new"]``)."""
        return self._row("new")

    def _row(self, name: str) -> Any:
        if not issubclass(self.channel, TriggerChannel):
            raise AttributeError(
                f"{self.channel.name()} is an app channel: it has no {name!r} row; "
                "its fields are in .kwargs"
            )
        return self.kwargs[name]

    def __repr__(self) -> str:
        details = "".join(
            f", {name}={value!r}"
            for name, value in (("op", self.op), ("trigger", self.trigger))
            if value is not None
        )
        context = f", context={self.context!r}" if self.context else ""
        return f"Published({self.channel.__name__}, {self.kwargs!r}{details}{context})"


def decode(channel: type[BaseChannel], payload: str, *, stored: bool, using: str) -> Published:
    """A row's event as :class:`Published` (``stored``: an outbox row).

    Raises :class:`pgpubsub.PayloadError` naming the channel when the event
    cannot be decoded as the channel declares it.
    """
    try:
        event = decode_stored_event(payload) if stored else event_decoder.decode(payload)
        if stored and issubclass(channel, TriggerChannel):
            channel.row_decoder().check_model(event.app, event.model, required=True)
        kwargs = listener_kwargs(channel, event, using)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise PayloadError(
            channel.name(),
            f"a captured event on {channel.name()} cannot be decoded: {exc}",
            preview=preview(payload),
        ) from exc
    return Published(channel, kwargs, event.op, event.trigger, event.context or None)


def selected_channels(channels: Sequence[type[BaseChannel] | str]) -> list[type[BaseChannel]]:
    """The channel classes defined so far that are one of ``channels`` or a subclass.

    Every channel class when none is given.
    """
    defined = all_channel_classes()
    if not channels:
        return defined
    wanted = tuple(locate_channel(channel) for channel in channels)
    return [channel for channel in defined if issubclass(channel, wanted)]


class _Open(threading.local):
    """The captures open in this thread (Django's connections are per thread too)."""

    def __init__(self) -> None:
        self.captures: list[Captured] = []


_open = _Open()


def collect_open(using: str) -> None:
    """Make the captures open on ``using`` read what was published so far.

    Called before listeners run: a durable claim deletes the outbox rows a
    capture reads.
    """
    for captured in list(_open.captures):
        if captured.using == using:
            captured.collect()


class Captured(Sequence[Published]):
    """The events published since it began, in order: what :func:`capture` returns.

    A sequence of :class:`Published`. While its block runs, each look at it
    (``len()``, iteration, indexing, :meth:`of`) reads what was published
    since the last look; when the block ends it reads a last time and then
    stays as it is.

    Order: the events of one transaction come together, transactions in
    the order they began. Within a transaction, events of broadcast and
    retained channels come in the order they were published, then those
    of durable channels, in the order they were published: the event tables
    and the outbox share no sequence that would order one against the
    other.
    """

    def __init__(self, channels: Sequence[type[BaseChannel] | str], using: str | None) -> None:
        self._given = tuple(channels)
        self.using = using or conf.database_alias()
        self._events: list[Published] = []
        self._rows: NewRows | None = None
        self._open = False

    # -- the block ---------------------------------------------------------------

    def __enter__(self) -> Captured:
        if self._rows is not None:
            raise RuntimeError("a capture is used once: start another with capture()")
        self._channels = selected_channels(self._given)
        self._by_name: dict[str, type[BaseChannel]] = {}
        for channel in self._channels:
            self._by_name[channel.listen_safe_name()] = channel
            if channel.lock_notifications:
                # django-pgpubsub 1.3.1's notify() stored rows under the dotted path.
                self._by_name[channel.name()] = channel
        self._durable_names = [
            name for name, channel in self._by_name.items() if channel.lock_notifications
        ]
        self._rows = NewRows(self.using)
        self._open = True
        _open.captures.append(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.finish(collect=exc_type is None)

    def finish(self, *, collect: bool = True) -> None:
        """End the capture (reading a last time with ``collect``); it stays as it is."""
        try:
            if collect and self._open:
                self.collect()
        finally:
            self._open = False
            if self in _open.captures:
                _open.captures.remove(self)

    def collect(self) -> None:
        """Read what was published since the last read (nothing once the block has ended)."""
        if not self._open:
            return
        assert self._rows is not None
        found: list[tuple[float, int, int, Published]] = []
        for row in self._rows.events(self._channels):
            event = decode(self._by_name[row.channel], row.payload, stored=False, using=self.using)
            found.append((row.created_at, 0, len(found), event))
        for stored in self._rows.outbox(self._durable_names):
            channel = self._by_name[stored.channel]
            event = decode(channel, stored.payload, stored=True, using=self.using)
            found.append((stored.created_at, 1, len(found), event))
        found.sort(key=lambda item: item[:3])
        self._events += [event for *_, event in found]

    # -- the events ----------------------------------------------------------------

    @property
    def events(self) -> list[Published]:
        """The events as a list."""
        self.collect()
        return list(self._events)

    def of(
        self, channel: type[BaseChannel] | str, *, op: str | None = None, trigger: str | None = None
    ) -> list[Published]:
        """The events of ``channel`` (class or dotted path), of one ``op`` or ``trigger`` if given.

        Only that exact channel: a subclass is another channel.
        """
        wanted = locate_channel(channel)
        return [
            event
            for event in self.events
            if event.channel is wanted
            and (op is None or event.op == op)
            and (trigger is None or event.trigger == trigger)
        ]

    @property
    def channels(self) -> list[type[BaseChannel]]:
        """The channel of each event, in order."""
        return [event.channel for event in self.events]

    def __len__(self) -> int:
        return len(self.events)

    @overload
    def __getitem__(self, index: int) -> Published: ...

    @overload
    def __getitem__(self, index: slice) -> list[Published]: ...

    def __getitem__(self, index: int | slice) -> Published | list[Published]:
        return self.events[index]

    def __iter__(self) -> Iterator[Published]:
        return iter(self.events)

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<Captured ({state}) {self._events!r}>"


def capture(*channels: type[BaseChannel] | str, using: str | None = None) -> Captured:
    """Record what the block publishes::

        with pgpubsub.testing.capture() as published:
            Author.objects.create(name="Ann")
        assert published.of(AuthorChannel, trigger="after_insert")[0].new.name == "Ann"

    ``channels`` (classes or dotted paths, with their subclasses; default:
    every channel) narrows what is recorded. ``using`` is the database
    alias (default ``PGPUBSUB_DATABASE``).

    Works whether or not the block's writes commit: in a ``TestCase``, the
    events are rows of the test's own transaction; in a
    ``TransactionTestCase``, rows other transactions commit during the
    block are recorded too. Nothing is delivered: see :func:`deliver`.
    """
    return Captured(channels, using)
