"""Publishing app-level notifications from Python."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import reprlib
from collections.abc import Iterable
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper

from . import sql
from .channel import BaseChannel, Channel, locate_channel
from .exceptions import NotifyError
from .registry import registered_channels

logger = logging.getLogger("pgpubsub")


def notify(channel: type[Channel] | str, /, **fields: Any) -> str:
    """Publish a notification on an app-level ``channel``.

    ``fields`` are the channel's dataclass fields; they are checked against
    the field types before anything is sent (:class:`pgpubsub.NotifyError`
    names the field at fault). ``using=`` names the database (default
    ``"default"``), unless the channel declares a field named ``using``:
    then ``using=`` is that field, as in django-pgpubsub 1.3.1, whose
    ``notify()`` had no ``using``, and the notification goes to the default
    database. The notification is part of the current transaction on that
    database: listeners see it after the transaction commits and never if
    it rolls back. The payload is sent as a bound parameter and is never
    interpreted as SQL; payloads of any size are delivered.

    Returns the payload as JSON text, ``{"kwargs": {...}}``, as 1.3.1 did.
    """
    if isinstance(channel, BaseChannel):
        raise _instance_given(channel)
    channel_cls = locate_channel(channel)
    if not issubclass(channel_cls, Channel):
        raise NotifyError(
            channel_cls.name(),
            f"{channel_cls.name()} is a TriggerChannel: its notifications are sent by database "
            "triggers, not notify()",
        )
    codec = channel_cls.codec()
    using = None if "using" in codec.field_names else fields.pop("using", None)
    encoded = codec.encode_kwargs(fields)
    payload = b'{"kwargs":' + encoded + b"}"
    events = b"[" + payload + b"]"
    connection = connections[using or DEFAULT_DB_ALIAS]
    cursor = _cursor(connection)
    try:
        cursor.execute(
            sql.PUBLISH,
            [
                channel_cls.listen_safe_name(),
                channel_cls.wake_key(),
                channel_cls.publish_flags(),
                events.decode(),
            ],
        )
    except BaseException:
        _forget_cursor(connection, cursor)
        raise
    logger.debug("pgpubsub: notified %s (%d bytes)", channel_cls.name(), len(encoded))
    return payload.decode()


def _instance_given(instance: BaseChannel) -> NotifyError:
    cls = type(instance)
    fields = ", ".join(
        f"{field.name}={reprlib.repr(getattr(instance, field.name, None))}"
        for field in dataclasses.fields(instance)
    )
    return NotifyError(
        cls.name(),
        f"notify() was given an instance of {cls.name()}; pass the channel class and the "
        f"fields as keywords: notify({cls.__name__}, {fields})",
    )


_CURSOR_ATTR = "_pgpubsub_notify_cursor"


def _cursor(connection: BaseDatabaseWrapper) -> Any:
    """A Django cursor for ``notify()`` on ``connection``, reused from call to call.

    A new psycopg cursor starts with empty adapter caches, and creating one
    per call was a quarter of ``notify()``'s own cost. The cursor is reused
    only while it still belongs to the connection's current database
    session, and never while Django logs queries (``DEBUG``,
    ``assertNumQueries``), whose cursors are another class. Django's
    connection objects are per thread, and so is the cursor kept on one.
    """
    cursor = connection.__dict__.get(_CURSOR_ATTR)
    if cursor is not None:
        raw = connection.connection
        if (
            raw is not None
            and not raw.closed
            and cursor.cursor.connection is raw
            and not cursor.cursor.closed
            and not connection.queries_logged
        ):
            return cursor
        _forget_cursor(connection, cursor)
    cursor = connection.cursor()
    if not connection.queries_logged:
        connection.__dict__[_CURSOR_ATTR] = cursor
    return cursor


def _forget_cursor(connection: BaseDatabaseWrapper, cursor: Any) -> None:
    if connection.__dict__.get(_CURSOR_ATTR) is cursor:
        del connection.__dict__[_CURSOR_ATTR]
    with contextlib.suppress(Exception):
        cursor.close()


def process_stored_notifications(
    channels: Iterable[type[BaseChannel] | str] | None = None, *, using: str | None = None
) -> None:
    """Wake the workers listening on durable channels to process stored notifications.

    Sends an empty NOTIFY on each durable channel given, and on their
    subclasses with listeners, as django-pgpubsub 1.3.1 did (default: every
    channel with a listener). Workers also find stored notifications on
    their own at start-up and every ``PGPUBSUB_POLL_INTERVAL`` seconds; this
    makes them look now.
    """
    selected = registered_channels(
        None if channels is None else [locate_channel(channel) for channel in channels]
    )
    with connections[using or "default"].cursor() as cursor:
        for channel_cls in selected:
            if channel_cls.lock_notifications:
                cursor.execute(sql.NOTIFY, [channel_cls.listen_safe_name(), ""])
