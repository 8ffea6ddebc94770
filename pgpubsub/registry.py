"""The listener registry: which functions listen to which channel.

The listener decorators (:mod:`pgpubsub.listeners`) add to it through
:func:`register_listener`; the worker, the checks, the status and the
metrics read it. It also indexes the channels with listeners by their
database name, which must be unique (:func:`channel_for_db_name`).

``registry`` is a plain dict, as django-pgpubsub 1.3.1's was (it is still
importable from :mod:`pgpubsub.channel`), and code such as a test may
change it directly. So nothing caches what it holds for longer than one
run: the cache of a :class:`pgpubsub.delivery.Delivery` belongs to one
worker, or one ``process_notifications()`` call.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .exceptions import ChannelDefinitionError, ListenerRegistrationError

if TYPE_CHECKING:
    from .channel import BaseChannel


@dataclasses.dataclass(frozen=True)
class Listener:
    """A registered listener: a callback and the events of a channel it serves."""

    callback: Callable[..., Any]
    channel: type[BaseChannel]
    #: PostgreSQL names of the triggers whose events this listener receives;
    #: ``None`` receives every event of the channel.
    triggers: frozenset[str] | None
    #: Whether the callback declares a ``context`` parameter.
    wants_context: bool
    #: Whether the callback takes ``**kwargs``.
    takes_kwargs: bool = False
    #: The keys by which events name those triggers (see
    #: ``pgpubsub.triggers.trigger_key()``); ``None`` with ``triggers``.
    keys: frozenset[str] | None = None
    #: Whether the callback is an ``async def`` function (it is awaited).
    is_async: bool = False

    @property
    def name(self) -> str:
        """The callback's dotted path, for logs."""
        return f"{self.callback.__module__}.{self.callback.__qualname__}"

    def serves(self, trigger: str | None) -> bool:
        """Whether an event from ``trigger`` (its key; ``None``: unknown) goes to this listener."""
        if self.keys is None or trigger is None:
            return True
        return trigger in self.keys


#: channel class -> listeners registered on it, in registration order.
registry: dict[type[BaseChannel], list[Listener]] = {}
_channels_by_db_name: dict[str, type[BaseChannel]] = {}


def _index_channel(channel: type[BaseChannel]) -> None:
    db_name = channel.listen_safe_name()
    known = _channels_by_db_name.get(db_name)
    # The same class re-imported (autoreload, tests) has the same module and
    # qualified name; anything else with this database name is a collision,
    # including two nested classes of one name in one module.
    if (
        known is not None
        and known is not channel
        and (known.__module__, known.__qualname__) != (channel.__module__, channel.__qualname__)
    ):
        raise ChannelDefinitionError(
            channel.name(),
            f"its database name {db_name!r} collides with {known.__module__}."
            f"{known.__qualname__}; rename one of them",
        )
    _channels_by_db_name[db_name] = channel


def channel_for_db_name(db_name: str) -> type[BaseChannel] | None:
    """The channel with listeners whose database name is ``db_name``, if any."""
    return _channels_by_db_name.get(db_name)


def register_listener(
    channel: type[BaseChannel],
    callback: Callable[..., Any],
    *,
    triggers: frozenset[str] | None,
    keys: frozenset[str] | None = None,
) -> Listener:
    """Add a listener to the registry (idempotent for the same callback and triggers)."""
    if not callable(callback):
        raise ListenerRegistrationError(
            f"a listener must be callable; got {callback!r} for {channel.name()}"
        )
    channel.validate()
    _index_channel(channel)
    try:
        parameters = inspect.signature(callback).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without signature
        parameters = {}  # type: ignore[assignment]
    listener = Listener(
        callback=callback,
        channel=channel,
        triggers=triggers,
        wants_context="context" in parameters,
        takes_kwargs=any(p.kind is p.VAR_KEYWORD for p in parameters.values()),
        keys=keys,
        is_async=inspect.iscoroutinefunction(callback),
    )
    listeners = registry.setdefault(channel, [])
    for index, known in enumerate(listeners):
        if known.name == listener.name and known.triggers == triggers:
            # Re-importing a listeners module registers the same function again.
            listeners[index] = listener
            return listener
    listeners.append(listener)
    return listener


def listeners_for(channel: type[BaseChannel], trigger: str | None = None) -> list[Listener]:
    """The listeners of ``channel`` that receive events of ``trigger`` (its key; ``None``: all)."""
    return [listener for listener in registry.get(channel, []) if listener.serves(trigger)]


def registered_channels(
    channels: Iterable[type[BaseChannel]] | None = None,
) -> list[type[BaseChannel]]:
    """The channels that have listeners, in registration order.

    With ``channels``, only those that are one of them or a subclass of one:
    ``listen --channels X`` and ``process_stored_notifications([X])`` take
    X's subclasses too, as django-pgpubsub 1.3.1 did.
    """
    if channels is None:
        return list(registry)
    wanted = tuple(channels)
    return [channel for channel in registry if issubclass(channel, wanted)]
