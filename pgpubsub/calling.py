"""The calling convention: which listeners an event goes to, and with what arguments.

A trigger channel's listeners are called with ``old`` and ``new`` model
instances, an app channel's with its fields as keyword arguments; a
listener also gets ``context`` when it declares that parameter, and with
``PGPUBSUB_PASS_CONTEXT_TO_LISTENERS`` every trigger listener and every
app-level listener taking ``**kwargs`` gets it too (as django-pgpubsub
1.3.1 passed it to trigger listeners). :func:`receives_context` is that
rule, written once: delivery calls listeners by it, and the system check
``pgpubsub.E001`` (:mod:`pgpubsub.checks`) checks their signatures by it.

This module does no I/O except the one explicit step of
:func:`listener_kwargs` that loads the model instances an app channel's
fields name. Web processes import it (through the checks); the delivery
machinery (:mod:`pgpubsub.delivery`) they never load.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from asgiref.sync import async_to_sync

from .channel import BaseChannel, Channel, TriggerChannel
from .exceptions import PayloadError
from .registry import Listener, listeners_for
from .wire import Event


def receives_context(listener: Listener, pass_context: bool) -> bool:
    """Whether ``listener`` is called with ``context``.

    ``pass_context`` is the value of ``PGPUBSUB_PASS_CONTEXT_TO_LISTENERS``.
    """
    return listener.wants_context or (
        pass_context and (listener.takes_kwargs or issubclass(listener.channel, TriggerChannel))
    )


def argument_names(channel: type[BaseChannel]) -> list[str]:
    """The keyword arguments (``context`` aside) the listeners of ``channel`` are called with."""
    if issubclass(channel, Channel):
        return list(channel.codec().field_names)
    return ["old", "new"] if issubclass(channel, TriggerChannel) else []


class ListenerCall(NamedTuple):
    """A listener, and whether it is called with ``context``."""

    listener: Listener
    with_context: bool


def listener_calls(
    channel: type[BaseChannel], trigger: str | None, pass_context: bool
) -> list[ListenerCall]:
    """The listeners of ``channel`` that receive events of ``trigger``, with their convention."""
    return [
        ListenerCall(listener, receives_context(listener, pass_context))
        for listener in listeners_for(channel, trigger)
    ]


def call_listener(
    call: ListenerCall, kwargs: dict[str, Any], context: dict[str, Any] | None
) -> None:
    """Call a listener with an event's ``kwargs`` (and ``context`` when it takes it).

    An ``async def`` listener is awaited, in an event loop of its own, from
    the calling thread: asgiref runs the synchronous code it awaits
    (``sync_to_async``, and so the async ORM) back in this thread, on this
    thread's Django connection, inside the batch's transaction. So an async
    listener's database writes commit, or roll back, with the batch's, like
    a plain listener's: exactly once for durable channels.
    """
    callback = call.listener.callback
    if call.listener.is_async:
        callback = async_to_sync(callback)
    if call.with_context:
        callback(**kwargs, context=context or {})
    else:
        callback(**kwargs)


def listener_kwargs(channel: type[BaseChannel], event: Event, using: str) -> dict[str, Any]:
    """What the listeners of ``event`` receive: ``old``/``new``, or the channel's fields.

    Rows become model instances without I/O (:mod:`pgpubsub.rows`); an app
    channel's fields are decoded without I/O, then the model instances they
    name are loaded (:meth:`pgpubsub.codec.ChannelCodec.resolve`).
    """
    if issubclass(channel, TriggerChannel):
        rows = channel.row_decoder()
        return {"old": rows.build(event.old, using), "new": rows.build(event.new, using)}
    if issubclass(channel, Channel):
        if not event.kwargs:
            raise PayloadError(channel.name(), "the event has no 'kwargs'")
        codec = channel.codec()
        kwargs = codec.decode(event.kwargs)
        return codec.resolve(kwargs) if codec.has_models else kwargs
    raise PayloadError(channel.name(), "unknown kind of channel")  # pragma: no cover
