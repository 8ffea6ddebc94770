"""Publishing app-level notifications from Python."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from django.db import connections

from . import sql
from .channel import BaseChannel, Channel, locate_channel, registry
from .exceptions import NotifyError

logger = logging.getLogger("pgpubsub")


def notify(channel: type[Channel] | str, *, using: str | None = None, **fields: Any) -> str:
    """Publish a notification on an app-level ``channel``.

    ``fields`` are the channel's dataclass fields; they are checked against
    the field types before anything is sent (:class:`pgpubsub.NotifyError`
    names the field at fault). The notification is part of the current
    transaction on the ``using`` database (default ``"default"``): listeners
    see it after the transaction commits and never if it rolls back. The
    payload is sent as a bound parameter and is never interpreted as SQL;
    payloads of any size are delivered.

    Returns the JSON-encoded fields.
    """
    channel_cls = locate_channel(channel)
    if not issubclass(channel_cls, Channel):
        raise NotifyError(
            channel_cls.name(),
            f"{channel_cls.name()} is a TriggerChannel: its notifications are sent by database "
            "triggers, not notify()",
        )
    encoded = channel_cls.codec().encode_kwargs(fields)
    events = b'[{"kwargs":' + encoded + b"}]"
    with connections[using or "default"].cursor() as cursor:
        cursor.execute(
            sql.PUBLISH,
            [channel_cls.listen_safe_name(), bool(channel_cls.lock_notifications), events.decode()],
        )
    logger.debug("pgpubsub: notified %s (%d bytes)", channel_cls.name(), len(encoded))
    return encoded.decode()


def process_stored_notifications(
    channels: Iterable[type[BaseChannel] | str] | None = None, *, using: str | None = None
) -> None:
    """Wake the workers listening on durable channels to process stored notifications.

    Sends an empty NOTIFY on each durable channel given (default: every
    registered one). Workers also find stored notifications on their own at
    start-up and every ``PGPUBSUB_POLL_INTERVAL`` seconds; this makes them
    look now.
    """
    selected = (
        list(registry) if channels is None else [locate_channel(channel) for channel in channels]
    )
    with connections[using or "default"].cursor() as cursor:
        for channel_cls in selected:
            if channel_cls.lock_notifications:
                cursor.execute(sql.NOTIFY, [channel_cls.listen_safe_name(), ""])
