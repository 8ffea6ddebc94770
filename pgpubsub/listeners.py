"""Listener decorators.

``@listener(Channel)`` registers a function for every notification of a
channel. The trigger decorators (``post_insert_listener`` and friends) also
register a django-pgtrigger trigger on the channel's model, so
``makemigrations`` writes it and ``migrate`` installs it; each listener then
receives only the events of its own timing and operation. Every decorator
returns the function unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, cast

import pgtrigger
from django.apps import apps
from django.db.models import Q

from .channel import BaseChannel, TriggerChannel, locate_channel
from .exceptions import LateListenerWarning, ListenerRegistrationError
from .registry import listeners_for, register_listener
from .triggers import DECORATOR_KEYS, ChannelTrigger, Notify, trigger_key

F = TypeVar("F", bound=Callable[..., Any])
ChannelRef = type[BaseChannel] | str

# (channel, timing, operation) -> the one trigger object for it, so that
# several listeners on one channel and operation share one trigger.
_channel_triggers: dict[tuple[type[BaseChannel], str, str], ChannelTrigger] = {}


def _register(
    channel: type[BaseChannel],
    callback: Callable[..., Any],
    *,
    triggers: frozenset[str] | None,
    keys: frozenset[str] | None,
) -> None:
    """Register a decorated listener; warn if it is new and registered after app loading."""
    known = {(listener.name, listener.triggers) for listener in listeners_for(channel)}
    registered = register_listener(channel, callback, triggers=triggers, keys=keys)
    if (registered.name, registered.triggers) not in known:
        _warn_if_registered_late(callback)


def _warn_if_registered_late(callback: Callable[..., Any]) -> None:
    """Warn about a listener registered after app loading from a module of an installed app.

    Listeners registered during app loading (from ``listeners.py``, or any
    module it or an ``AppConfig.ready()`` imports) are in every process, the
    worker's included. One registered later was imported by something else
    (a view, a task module), which the worker may never import. Test modules
    (a ``tests`` package, ``test*`` modules) and modules outside the
    installed apps (scripts that register listeners and run a worker
    themselves) are left alone.
    """
    if not apps.ready:
        return
    module = getattr(callback, "__module__", None) or ""
    parts = module.split(".")
    if any(part == "tests" or part.startswith("test") for part in parts[1:]):
        return
    app = next(
        (
            config
            for config in apps.get_app_configs()
            if module == config.name or module.startswith(config.name + ".")
        ),
        None,
    )
    if app is None:
        return
    warnings.warn(
        f"listener {module}.{getattr(callback, '__qualname__', callback)} was registered after "
        f"Django's app loading, when {module} was imported: `manage.py listen` imports each "
        "installed app's listeners.py at start-up, so a worker runs this listener only if "
        f"something else imports {module} in its process. Declare it in {app.name}.listeners, "
        "or import its module from there.",
        LateListenerWarning,
        stacklevel=4,
    )


def listener(channel: ChannelRef) -> Callable[[F], F]:
    """Register the decorated function for every notification on ``channel``.

    For a :class:`pgpubsub.Channel` the function receives the channel's fields
    as keyword arguments; for a :class:`pgpubsub.TriggerChannel` it receives
    ``old`` and ``new`` of every trigger on the channel.
    """
    channel_cls = locate_channel(channel)
    channel_cls.validate()

    def decorate(callback: F) -> F:
        _register(channel_cls, callback, triggers=None, keys=None)
        return callback

    return decorate


def _trigger_channel(channel: ChannelRef) -> type[TriggerChannel]:
    channel_cls = locate_channel(channel)
    if not issubclass(channel_cls, TriggerChannel):
        raise ListenerRegistrationError(
            f"{channel_cls.name()} is not a TriggerChannel; trigger listeners need a channel "
            "with a model. Use @pgpubsub.listener for app-level channels."
        )
    channel_cls.validate()
    return channel_cls


def _channel_trigger(
    channel: type[TriggerChannel], when: pgtrigger.When, operation: pgtrigger.Operation
) -> ChannelTrigger:
    key = (channel, str(when), str(operation))
    trigger = _channel_triggers.get(key)
    if trigger is None:
        trigger = ChannelTrigger(channel=channel, when=when, operation=operation)
        # django-pgtrigger annotates model classes as instances.
        trigger.register(cast(Any, channel.get_model()))
        _channel_triggers[key] = trigger
    return trigger


def install_retained_triggers(channel: type[TriggerChannel]) -> None:
    """Give a retained trigger channel its AFTER INSERT, UPDATE and DELETE triggers.

    A channel with ``retention`` publishes every row change to the event log,
    for :func:`pgpubsub.subscribe`, whether or not it has listeners; the
    triggers are the same ones the ``post_*_listener`` decorators install.
    """
    for operation in (pgtrigger.Insert, pgtrigger.Update, pgtrigger.Delete):
        _channel_trigger(channel, pgtrigger.After, operation)


def _operation_listener(
    channel: ChannelRef, when: pgtrigger.When, *operations: pgtrigger.Operation
) -> Callable[[F], F]:
    channel_cls = _trigger_channel(channel)
    model: Any = channel_cls.get_model()
    triggers = [_channel_trigger(channel_cls, when, op) for op in operations]
    pgids = frozenset(trigger.get_pgid(model) for trigger in triggers)
    keys = frozenset(trigger_key(trigger) for trigger in triggers)

    def decorate(callback: F) -> F:
        _register(channel_cls, callback, triggers=pgids, keys=keys)
        return callback

    return decorate


def pre_save_listener(channel: ChannelRef) -> Callable[[F], F]:
    """Listen to rows about to be inserted or updated (BEFORE INSERT OR UPDATE)."""
    return _operation_listener(channel, pgtrigger.Before, pgtrigger.Insert, pgtrigger.Update)


def post_save_listener(channel: ChannelRef) -> Callable[[F], F]:
    """Listen to inserted and updated rows (AFTER INSERT OR UPDATE)."""
    return _operation_listener(channel, pgtrigger.After, pgtrigger.Insert, pgtrigger.Update)


def pre_insert_listener(channel: ChannelRef) -> Callable[[F], F]:
    """Listen to rows about to be inserted (BEFORE INSERT); ``old`` is ``None``."""
    return _operation_listener(channel, pgtrigger.Before, pgtrigger.Insert)


def post_insert_listener(channel: ChannelRef) -> Callable[[F], F]:
    """Listen to inserted rows (AFTER INSERT); ``old`` is ``None``."""
    return _operation_listener(channel, pgtrigger.After, pgtrigger.Insert)


def pre_update_listener(channel: ChannelRef) -> Callable[[F], F]:
    """Listen to rows about to be updated (BEFORE UPDATE)."""
    return _operation_listener(channel, pgtrigger.Before, pgtrigger.Update)


def post_update_listener(channel: ChannelRef) -> Callable[[F], F]:
    """Listen to updated rows (AFTER UPDATE)."""
    return _operation_listener(channel, pgtrigger.After, pgtrigger.Update)


def pre_delete_listener(channel: ChannelRef) -> Callable[[F], F]:
    """Listen to rows about to be deleted (BEFORE DELETE); ``new`` is ``None``.

    The trigger never cancels the delete.
    """
    return _operation_listener(channel, pgtrigger.Before, pgtrigger.Delete)


def post_delete_listener(channel: ChannelRef) -> Callable[[F], F]:
    """Listen to deleted rows (AFTER DELETE); ``new`` is ``None``."""
    return _operation_listener(channel, pgtrigger.After, pgtrigger.Delete)


def trigger_listener(channel: ChannelRef, trigger: pgtrigger.Trigger) -> Callable[[F], F]:
    """Listen to the events of a custom trigger on the channel's model.

    ``trigger`` is usually a :class:`pgpubsub.triggers.Notify` built with the
    timing, operation and condition you need; it is registered on the model
    (once, however many listeners share it) and bound to ``channel``. The
    listener receives only that trigger's events.
    """
    channel_cls = _trigger_channel(channel)
    model: Any = channel_cls.get_model()
    if not isinstance(trigger, pgtrigger.Trigger):
        raise ListenerRegistrationError(
            f"trigger_listener({channel_cls.name()}, ...) needs a pgtrigger.Trigger, "
            f"got {trigger!r}"
        )
    if trigger.name in DECORATOR_KEYS:
        raise ListenerRegistrationError(
            f"trigger_listener({channel_cls.name()}, ...): the trigger name {trigger.name!r} is "
            "reserved for the triggers of the listener decorators; choose another name"
        )
    if isinstance(trigger, Notify):
        trigger.bind(channel_cls)
    already = any(
        registered_model is model and registered.name == trigger.name
        for registered_model, registered in pgtrigger.registered()
    )
    if not already:
        trigger.register(model)
    pgid = trigger.get_pgid(model)

    def decorate(callback: F) -> F:
        _register(
            channel_cls,
            callback,
            triggers=frozenset({pgid}),
            keys=frozenset({trigger_key(trigger)}),
        )
        return callback

    return decorate


class ListenerFilterProvider(Protocol):
    """Selects which stored notifications a worker takes.

    Name an implementation in ``PGPUBSUB_LISTENER_FILTER``; its ``get_filter``
    returns a ``Q`` over :class:`pgpubsub.models.Notification` (for example
    ``Q(payload__new__tenant_id=7)``).
    """

    def get_filter(self) -> Q: ...
