"""Django Channels bridge: channels' events sent to channel layer groups.

::

    from pgpubsub.contrib.channels import forward_to_groups

    # Once per process (see below), e.g. from an ASGI lifespan startup:
    asyncio.create_task(forward_to_groups([AuthorChannel], group="authors", fields=["name"]))

    class AuthorsConsumer(AsyncWebsocketConsumer):
        async def connect(self):
            await self.channel_layer.group_add("authors", self.channel_name)
            await self.accept()

        async def pgpubsub_event(self, message):  # type "pgpubsub.event"
            await self.send(text_data=message["data"])

Each event becomes one ``group_send(group, message)`` with the message
``{"type": "pgpubsub.event", "id": <event id>, "event": <channel dotted
path>, "data": <JSON text>}``; ``data`` is the JSON a browser stream sends
(:mod:`pgpubsub.eventjson`: for trigger channels only the chosen
``fields``), encoded once for every consumer of the group.

Where to run it: with a process-local layer (``InMemoryChannelLayer``) run
it in every process, so each process feeds its own consumers; pgpubsub is
then the cross-process fan-out. With a shared layer (``channels_redis``)
run it in one process only: every process's forwarder would send each
event to every consumer once more.

Needs the ``channels`` package (``pip install "pgpubsub-django[channels]"``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..channel import BaseChannel
from ..eventjson import Variant, formats
from ..exceptions import StreamConfigurationError
from ..hub import Event
from . import follow

#: The ``type`` of the messages sent, i.e. the consumer method ``pgpubsub_event``.
MESSAGE_TYPE = "pgpubsub.event"

_GROUP_NAME = re.compile(r"^[a-zA-Z\d\-_.]{1,99}$")

#: A group name, or a function of the ``pgpubsub.Event`` returning names.
GroupSpec = str | Callable[..., str | Iterable[str] | None]


async def forward_to_groups(
    channels: Sequence[type[BaseChannel] | str],
    *,
    group: GroupSpec,
    fields: Sequence[str] | Mapping[Any, Sequence[str]] | None = None,
    message_type: str = MESSAGE_TYPE,
    channel_layer: Any = None,
    since: str | None = None,
    using: str | None = None,
    started: Callable[[], None] | None = None,
) -> None:
    """Send every event of ``channels`` to channel layer groups, until cancelled.

    ``group`` is a group name, or a function of the ``pgpubsub.Event``
    returning a name, several names, or ``None`` (send it nowhere): route
    rows to per-tenant groups that way. ``fields`` chooses the columns of
    trigger channels' rows, as for :class:`pgpubsub.sse.EventStreamView`
    (default: the primary key alone). ``channel_layer`` defaults to
    ``channels.layers.get_channel_layer()``. ``started`` is called once the
    subscription is in place.
    """
    if channel_layer is None:
        try:
            from channels.layers import get_channel_layer
        except ImportError as exc:
            raise StreamConfigurationError(
                "pgpubsub.contrib.channels needs Django Channels: "
                'pip install "pgpubsub-django[channels]"'
            ) from exc
        channel_layer = get_channel_layer()
        if channel_layer is None:
            raise StreamConfigurationError(
                "no channel layer is configured (settings.CHANNEL_LAYERS); set one or pass "
                "channel_layer="
            )
    if isinstance(group, str):
        _check_group(group)
    elif not callable(group):
        raise StreamConfigurationError(
            f"group must be a group name or a function of the event, got {group!r}"
        )
    encoders = formats(channels, fields)

    async def send(batch: list[Event]) -> None:
        for event in batch:
            if not encoders[event.channel].counts(event):
                continue
            targets = _groups(group, event)
            if not targets:
                continue
            message = {
                "type": message_type,
                "id": event.id,
                "event": event.channel.name(),
                "data": encoders[event.channel].data(event, Variant.FULL).decode(),
            }
            for name in targets:
                await channel_layer.group_send(name, message)

    await follow(channels, send, since=since, using=using, started=started)


def _groups(spec: GroupSpec, event: Event) -> list[str]:
    if isinstance(spec, str):
        return [spec]
    found = spec(event)
    names = [] if found is None else [found] if isinstance(found, str) else list(found)
    for name in names:
        _check_group(name)
    return names


def _check_group(name: object) -> None:
    if not isinstance(name, str) or not _GROUP_NAME.match(name):
        raise StreamConfigurationError(
            f"{name!r} is not a valid channel layer group name (ASCII letters, digits, "
            "hyphens, underscores and periods, fewer than 100 characters)"
        )


__all__ = ["MESSAGE_TYPE", "forward_to_groups"]
