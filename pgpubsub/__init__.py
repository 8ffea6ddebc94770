"""pgpubsub: PostgreSQL LISTEN/NOTIFY as a dependable pub/sub framework for Django."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from .channel import Channel, TriggerChannel
from .context import set_notification_context
from .exceptions import (
    ChannelDefinitionError,
    ChannelNotFound,
    CheckpointExpired,
    EventsMayBeMissed,
    InvalidCheckpoint,
    ListenerRegistrationError,
    NotifyError,
    PayloadError,
    PgpubsubError,
    SubscriberTooSlow,
    SubscriptionEnded,
    SubscriptionError,
    UnsupportedServerError,
)
from .hub import Event, acheckpoint, checkpoint, subscribe
from .listeners import (
    ListenerFilterProvider,
    listener,
    post_delete_listener,
    post_insert_listener,
    post_save_listener,
    post_update_listener,
    pre_delete_listener,
    pre_insert_listener,
    pre_save_listener,
    pre_update_listener,
    trigger_listener,
)
from .notify import notify, process_stored_notifications
from .registry import Listener

try:
    # The distribution is pgpubsub-django; the package it installs is pgpubsub.
    __version__ = version("pgpubsub-django")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0"

__all__ = [
    "Channel",
    "ChannelDefinitionError",
    "ChannelNotFound",
    "CheckpointExpired",
    "Event",
    "EventsMayBeMissed",
    "InvalidCheckpoint",
    "Listener",
    "ListenerFilterProvider",
    "ListenerRegistrationError",
    "NotifyError",
    "PayloadError",
    "PgpubsubError",
    "SubscriberTooSlow",
    "SubscriptionEnded",
    "SubscriptionError",
    "TriggerChannel",
    "UnsupportedServerError",
    "__version__",
    "acheckpoint",
    "checkpoint",
    "listener",
    "notify",
    "post_delete_listener",
    "post_insert_listener",
    "post_save_listener",
    "post_update_listener",
    "pre_delete_listener",
    "pre_insert_listener",
    "pre_save_listener",
    "pre_update_listener",
    "process_stored_notifications",
    "set_notification_context",
    "subscribe",
    "trigger_listener",
]
