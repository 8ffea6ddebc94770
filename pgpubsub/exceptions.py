"""Exceptions raised by pgpubsub.

Every error pgpubsub raises on purpose is a :class:`PgpubsubError`; each
subclass carries the attributes a caller needs to act on it.
"""

from __future__ import annotations


class PgpubsubError(Exception):
    """Base class of every error raised by pgpubsub."""


class ChannelNotFound(PgpubsubError, LookupError):
    """A channel given by dotted path (or name) does not exist or is not a channel."""

    def __init__(self, channel: object = None, reason: str = "") -> None:
        # ``channel`` may be left out, as django-pgpubsub 1.3.1's
        # ``ChannelNotFound()`` took no argument.
        self.channel = channel
        message = "Channel not found" if channel is None else f"Channel not found: {channel!r}"
        if reason:
            message += f" ({reason})"
        super().__init__(message)


class ChannelDefinitionError(PgpubsubError, TypeError):
    """A channel class cannot be used as declared (for example a field type
    that cannot be carried in a payload, or a trigger channel without a model)."""

    def __init__(self, channel: str, message: str, *, field: str | None = None) -> None:
        self.channel = channel
        self.field = field
        where = f"{channel}.{field}" if field else channel
        super().__init__(f"{where}: {message}")


class NotifyError(PgpubsubError, ValueError):
    """``notify()`` was called with arguments that do not match the channel."""

    def __init__(self, channel: str, message: str, *, field: str | None = None) -> None:
        self.channel = channel
        self.field = field
        super().__init__(message)


class PayloadError(PgpubsubError, ValueError):
    """A notification payload received by the worker could not be decoded."""

    def __init__(self, channel: str, message: str, *, preview: str = "") -> None:
        self.channel = channel
        self.preview = preview
        super().__init__(message)


class ListenerRegistrationError(PgpubsubError, TypeError):
    """A listener decorator was used in a way that cannot work."""
