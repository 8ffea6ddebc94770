"""Exceptions raised by pgpubsub.

Every error pgpubsub raises on purpose is a :class:`PgpubsubError`; each
subclass carries the attributes a caller needs to act on it.
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


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


class UnsupportedServerError(PgpubsubError, RuntimeError):
    """The PostgreSQL server is older than the oldest version pgpubsub supports."""

    def __init__(self, server_version: str, minimum: str) -> None:
        self.server_version = server_version
        self.minimum = minimum
        super().__init__(
            f"pgpubsub needs PostgreSQL {minimum} or newer, but the server runs "
            f"PostgreSQL {server_version}; upgrade the server (the supported versions "
            "are listed in the quickstart's Requirements)"
        )


class DatabaseConfigurationError(PgpubsubError):
    """The database refused the worker's connection because of its settings.

    A database that does not exist, an unknown role, a wrong password, no
    ``pg_hba.conf`` entry: retrying cannot help, so the worker stops.
    """

    def __init__(self, alias: str, reason: str) -> None:
        self.alias = alias
        self.reason = reason
        super().__init__(
            f"cannot connect to database {alias!r} (configuration error): {reason}. "
            f"Check DATABASES[{alias!r}] (NAME, USER, PASSWORD, HOST, PORT)."
        )


class DatabaseNotMigrated(PgpubsubError):
    """pgpubsub's tables or SQL functions are not in the database: ``migrate`` has not run."""

    def __init__(self, alias: str, database: str) -> None:
        self.alias = alias
        self.database = database
        super().__init__(
            f"pgpubsub's tables are not in database {database!r} (alias {alias!r}); "
            "run `python manage.py migrate` first"
        )


class LateListenerWarning(RuntimeWarning):
    """A listener was registered after Django's app loading, from a module of an app.

    ``manage.py listen`` imports each installed app's ``channels`` and
    ``listeners`` modules during app loading; a listener in a module imported
    only later (by a view, say) is run by a worker only if something happens
    to import that module in the worker's process too.
    """


class InvalidCheckpoint(PgpubsubError, ValueError):
    """A ``since`` position is not an event id of this database."""

    def __init__(self, value: object, reason: str) -> None:
        self.value = value
        super().__init__(f"invalid checkpoint {value!r}: {reason}")


class CheckpointExpired(PgpubsubError):
    """Events after a ``since`` position were already deleted by retention cleanup.

    ``channel`` is the channel's dotted path and ``oldest`` the oldest
    position from which its events can still be resumed without a gap: the
    client must refetch its state (from the database) and subscribe again.
    """

    def __init__(self, channel: str, since: str, oldest: str) -> None:
        self.channel = channel
        self.since = since
        self.oldest = oldest
        super().__init__(
            f"checkpoint {since} of {channel} has expired: events after it were deleted "
            f"by retention cleanup; the oldest position still available is {oldest}. "
            "Reload the state and subscribe again (without since, or from a new checkpoint)."
        )


class SubscriptionError(PgpubsubError, ValueError):
    """:func:`pgpubsub.subscribe` was called in a way that cannot work."""


class SubscriptionEnded(PgpubsubError):
    """A subscription ended before its caller did; ``last_id`` is the last event it yielded.

    Subscribe again with ``since=last_id`` (for channels with ``retention``)
    to continue without a gap.
    """

    def __init__(self, last_id: str | None, message: str) -> None:
        self.last_id = last_id
        super().__init__(message)


class SubscriberTooSlow(SubscriptionEnded):
    """The subscriber did not keep up: more than ``max_queue`` events waited for it."""

    def __init__(self, last_id: str | None, max_queue: int) -> None:
        self.max_queue = max_queue
        super().__init__(
            last_id,
            f"the subscriber fell more than {max_queue} events behind and was cut off; "
            f"subscribe again with since={last_id!r} to continue"
            if last_id
            else f"the subscriber fell more than {max_queue} events behind and was cut off",
        )


class EventsMayBeMissed(SubscriptionEnded):
    """The connection to the database was lost; events of channels without retention
    sent meanwhile may be gone."""

    def __init__(self, last_id: str | None) -> None:
        super().__init__(
            last_id,
            "the subscription lost its database connection; events of channels without "
            "`retention` may have been missed: reload the state and subscribe again",
        )


class StreamConfigurationError(PgpubsubError, ImproperlyConfigured):
    """A browser stream or a bridge (``pgpubsub.sse``, ``pgpubsub.contrib``) is
    configured in a way that cannot work: an unknown field, a channel that
    cannot be subscribed to, a scope of another model."""


class ScopeError(PgpubsubError, ValueError):
    """A stream's scope cannot be used to judge events (see ``pgpubsub.scope``)."""
