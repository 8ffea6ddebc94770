"""Channels: the dataclasses that name a stream of notifications.

A :class:`Channel` is an app-level channel whose dataclass fields are the
payload, published with :func:`pgpubsub.notify`. A :class:`TriggerChannel`
is bound to a model; database triggers publish its row changes and its
listeners receive ``old`` and ``new`` model instances.

This module declares channels and names them: the dotted path
(:meth:`BaseChannel.name`), the database name
(:meth:`BaseChannel.listen_safe_name`), :func:`locate_channel` for a
dotted path, and :func:`channel_names` for every channel known. Who
listens to a channel is :mod:`pgpubsub.registry`'s business; how its
payloads are written and read is :mod:`pgpubsub.codec`'s (app channels) and
:mod:`pgpubsub.rows`'s (trigger channels).

``registry``, ``set_notification_context`` and ``ChannelNotFound`` are
importable from here too, as they were from django-pgpubsub 1.3.1's
``pgpubsub.channel``.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import importlib
import inspect
import pydoc
import sys
import typing
from collections.abc import Callable
from typing import Any, ClassVar

import msgspec
from django.apps import apps
from django.db import models

from . import conf
from .codec import ChannelCodec
from .context import set_notification_context
from .exceptions import ChannelDefinitionError, ChannelNotFound, PayloadError
from .registry import channel_for_db_name, register_listener, registry
from .rows import RowDecoder
from .wakeups import wake_key
from .wire import Event, decode_stored_event

__all__ = [
    "MAX_CHANNEL_NAME_LENGTH",
    "BaseChannel",
    "Channel",
    "ChannelNotFound",
    "TriggerChannel",
    "all_channel_classes",
    "channel_names",
    "known_channels",
    "locate_channel",
    "registry",
    "set_notification_context",
]

#: The longest channel name LISTEN/NOTIFY accept, in bytes.
MAX_CHANNEL_NAME_LENGTH = 63


T = typing.TypeVar("T")


def _once_per_class(build: Callable[[Any], T]) -> Callable[[Any], T]:
    """Make a classmethod's ``build(cls)`` run once per class and keep its result.

    Kept in the class's own ``__dict__`` (``_pgpubsub_<name>``), so it is not
    inherited: a subclass is another channel. notify() and the worker ask
    for a channel's name and codec on every event.
    """
    attribute = f"_pgpubsub_{build.__name__}"

    @functools.wraps(build)
    def once(cls: Any) -> T:
        found: T | None = cls.__dict__.get(attribute)
        if found is None:
            found = build(cls)
            setattr(cls, attribute, found)
        return found

    return once


@dataclasses.dataclass
class BaseChannel:
    """Common behaviour of :class:`Channel` and :class:`TriggerChannel`."""

    #: Durable, exactly-once delivery through the stored-notification outbox.
    lock_notifications: ClassVar[bool] = False
    #: Attempts before a failing durable notification is dead-lettered;
    #: ``None`` uses ``PGPUBSUB_MAX_ATTEMPTS``.
    max_attempts: ClassVar[int | None] = None
    #: How long the channel's events stay in the event log, where
    #: :func:`pgpubsub.subscribe` can resume from them (``None``: not kept).
    retention: ClassVar[datetime.timedelta | None] = None

    #: Class settings that a subclass must assign, not annotate.
    _settings: ClassVar[tuple[str, ...]] = ("lock_notifications", "max_attempts", "retention")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Runs when the class statement ends, before @dataclass turns its
        # annotations into fields, so a declaration mistake is reported here
        # in our words rather than as dataclass's TypeError about some other
        # field ("non-default argument 'old' follows default argument").
        super().__init_subclass__(**kwargs)
        annotations = inspect.get_annotations(cls)
        for setting in cls._settings:
            if setting in annotations and not _is_classvar(annotations[setting]):
                value = cls.__dict__.get(setting, "...")
                raise ChannelDefinitionError(
                    f"{cls.__module__}.{cls.__qualname__}",
                    f"{setting} is a setting of the channel, not a field of its payload: "
                    f"write `{setting} = {value!r}` without a type annotation",
                    field=setting,
                )

    @classmethod
    @_once_per_class
    def name(cls) -> str:
        """The channel's dotted path, e.g. ``"myapp.channels.AuthorChannel"``."""
        # __name__, not __qualname__: the name (and so the database name)
        # must match django-pgpubsub 1.3.1's for stored notifications to carry over.
        module = inspect.getmodule(cls)
        return f"{module.__name__ if module else cls.__module__}.{cls.__name__}"

    @classmethod
    def listen_safe_name(cls) -> str:
        """The LISTEN/NOTIFY channel name used in the database.

        Short, stable and derived from :meth:`name` (the same derivation as
        django-pgpubsub 1.3.1, so stored notifications carry over).
        """
        return _db_name(cls.name())

    @classmethod
    def get(cls, name: str) -> tuple[type[BaseChannel], list[Callable[..., Any]]] | None:
        """Find a registered channel by its database name (compatibility helper)."""
        channel = channel_for_db_name(name)
        if channel is None:
            return None
        return channel, [listener.callback for listener in registry.get(channel, [])]

    @classmethod
    def register(cls, callback: Callable[..., Any]) -> None:
        """Register ``callback`` for every event of this channel."""
        register_listener(cls, callback, triggers=None)

    @classmethod
    def validate(cls) -> None:
        """Check that the channel can be used; raise :class:`ChannelDefinitionError` if not."""
        name = cls.listen_safe_name()
        if len(name.encode()) > MAX_CHANNEL_NAME_LENGTH:  # pragma: no cover - fixed length
            raise ChannelDefinitionError(cls.name(), f"database name {name!r} is too long")
        if cls.max_attempts is not None and (
            isinstance(cls.max_attempts, bool)
            or not isinstance(cls.max_attempts, int)
            or cls.max_attempts < 1
        ):
            raise ChannelDefinitionError(
                cls.name(), f"max_attempts must be an integer >= 1, got {cls.max_attempts!r}"
            )
        retention = cls.retention
        if retention is not None and (
            not isinstance(retention, datetime.timedelta) or retention <= datetime.timedelta(0)
        ):
            raise ChannelDefinitionError(
                cls.name(),
                "retention must be a positive datetime.timedelta (e.g. "
                f"`retention = timedelta(hours=24)`) or None, got {retention!r}",
            )

    @classmethod
    def retained(cls) -> bool:
        """Whether the channel's events are kept in the event log (``retention`` is set)."""
        return cls.retention is not None

    @classmethod
    def wake_key(cls) -> int:
        """The channel's lock key in the wake-up protocol (see :mod:`pgpubsub.wakeups`)."""
        return wake_key(cls.listen_safe_name())

    @classmethod
    def publish_flags(cls) -> int:
        """Where the channel's events are written: 1 outbox (durable), 2 event log (retained)."""
        return (1 if cls.lock_notifications else 0) | (2 if cls.retention is not None else 0)

    @classmethod
    def effective_max_attempts(cls) -> int:
        if cls.max_attempts is None:
            return conf.max_attempts()
        return cls.max_attempts


@functools.cache
def _db_name(dotted: str) -> str:
    return "pgpubsub_" + hashlib.sha1(dotted.encode()).hexdigest()[:5]


@dataclasses.dataclass
class Channel(BaseChannel):
    """An app-level channel; subclass it as a ``@dataclass`` whose fields are the payload."""

    @classmethod
    @_once_per_class
    def codec(cls) -> ChannelCodec:
        """The channel's payload codec (built once, raising if a field cannot be carried)."""
        return ChannelCodec.build(cls, cls.name())

    @classmethod
    def validate(cls) -> None:
        super().validate()
        cls.codec()

    def serialize(self) -> str:
        """This notification's payload as JSON text, ``{"kwargs": {...}}``.

        django-pgpubsub 1.3.1 compatibility, for tests that call it: the
        encoding, and the type checks, of :func:`pgpubsub.notify`.
        """
        codec = type(self).codec()
        fields = {name: getattr(self, name) for name in codec.field_names}
        return '{"kwargs":' + codec.encode_kwargs(fields).decode() + "}"

    @classmethod
    def deserialize(cls, payload: dict[str, Any] | str | bytes) -> dict[str, Any]:
        """The fields of a payload written by :meth:`serialize` or ``notify()``.

        django-pgpubsub 1.3.1 compatibility, for tests that call it.
        ``payload`` is JSON text or a stored notification's ``payload``.
        """
        event = _decode_payload(payload)
        if not event.kwargs:
            raise PayloadError(cls.name(), "the payload has no 'kwargs'")
        return cls.codec().decode_kwargs(event.kwargs)


@dataclasses.dataclass
class TriggerChannel(BaseChannel):
    """A channel bound to a model; its listeners receive ``old`` and ``new`` instances.

    Set ``model`` to the model class (or its ``"app_label.ModelName"`` label).
    """

    model: ClassVar[Any] = NotImplementedError
    old: models.Model | None
    new: models.Model | None
    context: dict[str, Any] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # ``model: Post`` (an annotation, as django-pgpubsub 1.3.1's own tests
        # write it) names the model just as ``model = Post`` does. Left as it
        # is, @dataclass would make ``model`` a field ahead of ``old`` and
        # fail; re-declared as a ClassVar it stays a class attribute.
        annotations = inspect.get_annotations(cls)
        if "model" in annotations and not _is_classvar(annotations["model"]):
            if "model" not in cls.__dict__:
                cls.model = _resolve_annotation(cls, annotations["model"])
            cls.__annotations__ = {**annotations, "model": ClassVar[Any]}
        super().__init_subclass__(**kwargs)

    @classmethod
    def get_model(cls) -> type[models.Model]:
        model = cls.model
        if isinstance(model, str):
            try:
                model = apps.get_model(model)
            except (LookupError, ValueError) as exc:
                raise ChannelDefinitionError(
                    cls.name(), f"model {cls.model!r} is not an installed model"
                ) from exc
        if not (isinstance(model, type) and issubclass(model, models.Model)):
            raise ChannelDefinitionError(
                cls.name(),
                f"a TriggerChannel needs `model = <Django model class>`, got {cls.model!r}",
            )
        return model

    @classmethod
    @_once_per_class
    def row_decoder(cls) -> RowDecoder:
        """Rebuilds the channel's model instances from event rows (built once)."""
        return RowDecoder(cls.get_model(), cls.name())

    @classmethod
    def validate(cls) -> None:
        super().validate()
        cls.get_model()

    @classmethod
    def deserialize(cls, payload: dict[str, Any] | str | bytes) -> dict[str, Any]:
        """``old`` and ``new`` rebuilt from a trigger event, as a listener receives them.

        django-pgpubsub 1.3.1 compatibility, for tests that call it.
        ``payload`` is a stored notification's ``payload`` or JSON text in
        1.3.1's or pgpubsub's shape; an ``app``/``model`` in it must name
        the channel's model. As in 1.3.1, it never reads the database:
        fields missing from a row take their default, and ``context`` is
        included only with ``PGPUBSUB_PASS_CONTEXT_TO_LISTENERS``.
        """
        event = _decode_payload(payload)
        rows = cls.row_decoder()
        rows.check_model(event.app, event.model, required=False)
        using = conf.database_alias()
        fields: dict[str, Any] = {
            "old": rows.build(event.old, using, fill_defaults=True),
            "new": rows.build(event.new, using, fill_defaults=True),
        }
        if conf.pass_context_to_listeners():
            fields["context"] = event.context or {}
        return fields


def _decode_payload(payload: dict[str, Any] | str | bytes) -> Event:
    if isinstance(payload, dict):
        payload = msgspec.json.encode(payload)
    return decode_stored_event(payload)


def _is_classvar(annotation: Any) -> bool:
    if isinstance(annotation, str):
        # Under ``from __future__ import annotations``, as dataclasses reads it.
        return annotation.replace("typing.", "").startswith("ClassVar")
    return annotation is ClassVar or typing.get_origin(annotation) is ClassVar


def _resolve_annotation(cls: type, annotation: Any) -> Any:
    """The object a ``model: X`` annotation names (a string under postponed annotations)."""
    if not isinstance(annotation, str):
        return annotation
    module = sys.modules.get(cls.__module__)
    namespace = dict(vars(module)) if module else {}
    try:
        return eval(annotation, namespace, dict(vars(cls)))  # as typing.get_type_hints() does
    except Exception:
        # Left as the text: get_model() accepts "app_label.ModelName" and
        # names the channel in its error otherwise.
        return annotation


def locate_channel(channel: type[BaseChannel] | str) -> type[BaseChannel]:
    """Return the channel class for a class or its dotted path.

    Raises :class:`ChannelNotFound` naming the path when it does not resolve
    to a :class:`Channel` or :class:`TriggerChannel` subclass.
    """
    if isinstance(channel, str):
        # notify("app.channels.X", ...) is a hot path: resolve each path once.
        located = _located.get(channel)
        if located is None:
            try:
                found = pydoc.locate(channel)
            except pydoc.ErrorDuringImport as exc:
                error = f"{getattr(exc.exc, '__name__', 'an error')}: {exc.value}"
                raise ChannelNotFound(channel, f"importing it failed: {error}") from exc
            if found is None:
                raise ChannelNotFound(channel, _not_found_reason(channel))
            located = _check_channel(found, channel)
            _located[channel] = located
        return located
    return _check_channel(channel, channel)


def _not_found_reason(path: str) -> str:
    """Why the dotted ``path`` names nothing: the module or the attribute that is missing."""
    parts = path.split(".")
    if len(parts) < 2:
        return "give the dotted path of the class, e.g. 'myapp.channels.Greeting'"
    for end in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:end])
        try:
            module: Any = importlib.import_module(module_name)
        except ImportError:
            continue
        for index in range(end, len(parts)):
            if not hasattr(module, parts[index]):
                if index < len(parts) - 1:
                    return f"no module named {'.'.join(parts[: index + 1])!r}"
                return f"{'.'.join(parts[:index])!r} has no attribute {parts[index]!r}"
            module = getattr(module, parts[index])
    return f"no module named {parts[0]!r}"


_located: dict[str, type[BaseChannel]] = {}


def _check_channel(located: object, given: object) -> type[BaseChannel]:
    if located is None:
        raise ChannelNotFound(given, "no such module attribute")
    if isinstance(located, BaseChannel):
        raise ChannelNotFound(
            given,
            f"an instance of {type(located).__name__}; pass the channel class itself "
            f"({type(located).__name__})",
        )
    if not (isinstance(located, type) and issubclass(located, BaseChannel)):
        raise ChannelNotFound(given, "not a Channel or TriggerChannel subclass")
    if located in (BaseChannel, Channel, TriggerChannel):
        raise ChannelNotFound(given, "declare a subclass; the base classes are not channels")
    return located


def all_channel_classes() -> list[type[BaseChannel]]:
    """Every concrete channel class defined so far (subclasses of the base classes)."""
    found: list[type[BaseChannel]] = []
    stack: list[type[BaseChannel]] = [Channel, TriggerChannel]
    while stack:
        for sub in stack.pop().__subclasses__():
            if sub not in found:
                found.append(sub)
                stack.append(sub)
    return found


def known_channels() -> list[type[BaseChannel]]:
    """Channels with listeners first, then every other channel class defined."""
    found = list(registry)
    found += [channel for channel in all_channel_classes() if channel not in found]
    return found


def channel_names() -> dict[str, str]:
    """Database channel name -> dotted path, for every channel class known."""
    return {channel.listen_safe_name(): channel.name() for channel in known_channels()}
