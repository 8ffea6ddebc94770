"""reflex-django bridge: trigger channels' events published to its live broadcaster.

reflex-django's live lists (``LiveListMixin``) follow a process-local
broadcaster fed by Django's ``post_save``/``post_delete`` signals, so they
miss ``QuerySet.update()``, bulk deletes, raw SQL and every write made by
another process. Run this bridge in every process that serves Reflex
states: it follows pgpubsub's triggers, which see all of those, and
publishes each row change as reflex-django's own ``ModelChange``::

    # in the Reflex app module (one task per backend process)
    from pgpubsub.contrib import reflex as pgpubsub_reflex

    app.register_lifespan_task(pgpubsub_reflex.forward, channels=[AuthorChannel])

    # or, in any process, from sync code (a thread with its own event loop):
    pgpubsub_reflex.start_in_thread([AuthorChannel]).ready.wait()

``INSERT``, ``UPDATE`` and ``DELETE`` become the actions ``created``,
``updated`` and ``deleted``, with the model's label (``"app.model"``) and
the row's primary key; the states re-read the row through their scoped
querysets, so nothing else of the row is needed. Saves made with
``Model.save()`` in a process whose signals are connected reach its
subscribers twice (once per path); the live lists apply a change
idempotently, so the second is harmless.

Needs reflex-django 4.x (``pip install "pgpubsub-django[reflex]"``; Python
3.12+, Django 6.0+). The channels must be :class:`~pgpubsub.TriggerChannel`
subclasses, ideally with ``retention`` so that a bridge that falls behind
resumes instead of missing changes.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from ..channel import BaseChannel, TriggerChannel, locate_channel
from ..eventjson import after_operations, is_row_change
from ..exceptions import StreamConfigurationError
from ..hub import Event
from . import follow

_ACTIONS = {"INSERT": "created", "UPDATE": "updated", "DELETE": "deleted"}


def _reflex() -> Any:
    try:
        from reflex_django import live
    except ImportError as exc:
        raise StreamConfigurationError(
            "pgpubsub.contrib.reflex needs reflex-django 4.x: "
            'pip install "pgpubsub-django[reflex]" (Python 3.12+, Django 6.0+)'
        ) from exc
    return live


def _trigger_channels(channels: Sequence[type[BaseChannel] | str]) -> list[type[TriggerChannel]]:
    located = [locate_channel(channel) for channel in channels]
    if not located:
        raise StreamConfigurationError("pgpubsub.contrib.reflex needs at least one channel")
    for channel in located:
        if not issubclass(channel, TriggerChannel):
            raise StreamConfigurationError(
                f"{channel.name()} is an app channel; reflex-django's broadcaster carries "
                "model changes, so only TriggerChannel subclasses can be forwarded"
            )
    return located  # type: ignore[return-value]


def model_change(event: Event) -> Any:
    """reflex-django's ``ModelChange`` for a trigger channel's event."""
    live = _reflex()
    row = event.kwargs["new"] if event.kwargs["new"] is not None else event.kwargs["old"]
    assert isinstance(event.channel, type) and issubclass(event.channel, TriggerChannel)
    return live.ModelChange(
        model_label=live.model_label(event.channel.get_model()),
        action=_ACTIONS[event.op or ""],
        pk=row.pk,
    )


async def forward(
    channels: Sequence[type[BaseChannel] | str],
    *,
    since: str | None = None,
    using: str | None = None,
    broadcaster: Any = None,
    started: Any = None,
) -> None:
    """Publish every event of ``channels`` to the broadcaster, until cancelled.

    ``broadcaster`` defaults to reflex-django's ``live_broadcaster()``, the
    process's own. ``started`` (a callable) is called once the subscription
    is in place.
    """
    live = _reflex()
    located = _trigger_channels(channels)
    target = broadcaster if broadcaster is not None else live.live_broadcaster()

    after_ops = {channel: after_operations(channel) for channel in located}

    def publish(batch: list[Event]) -> None:
        for event in batch:
            if is_row_change(event, after_ops[event.channel]):  # type: ignore[index]
                target.publish(model_change(event))

    await follow(located, publish, since=since, using=using, started=started)


class ThreadedForwarder:
    """:func:`forward` running in a daemon thread with its own event loop."""

    def __init__(self, channels: Sequence[type[BaseChannel] | str], **options: Any) -> None:
        _reflex()
        self.channels = _trigger_channels(channels)
        self.options = options
        #: Set once the subscription is in place.
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=self._run, name="pgpubsub-reflex", daemon=True)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        try:
            await forward(self.channels, started=self.ready.set, **self.options)
        except asyncio.CancelledError:
            pass
        finally:
            from asgiref.sync import sync_to_async
            from django.db import connections

            await sync_to_async(connections.close_all, thread_sensitive=False)()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the forwarding and wait for the thread to end."""
        loop, task = self.loop, getattr(self, "_task", None)
        if loop is not None and task is not None:
            loop.call_soon_threadsafe(task.cancel)
        self.thread.join(timeout)


def start_in_thread(
    channels: Sequence[type[BaseChannel] | str], **options: Any
) -> ThreadedForwarder:
    """Start :func:`forward` in a daemon thread; ``.ready.wait()`` for the subscription."""
    forwarder = ThreadedForwarder(channels, **options)
    forwarder.thread.start()
    return forwarder


__all__ = ["ThreadedForwarder", "forward", "model_change", "start_in_thread"]
