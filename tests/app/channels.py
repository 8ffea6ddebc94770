"""Channels of the test app."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from pgpubsub import Channel, TriggerChannel

from .models import Author, Everything, Note, Order, Post, Profile, Restaurant


@dataclass
class AuthorChannel(TriggerChannel):
    model = Author


@dataclass
class PostChannel(TriggerChannel):
    model = Post


@dataclass
class OrderChannel(TriggerChannel):
    model = Order
    # A worker started with this variable set has code that says broadcast
    # while the database's trigger says durable (drift tests).
    lock_notifications = os.environ.get("PGPUBSUB_TEST_ORDER_BROADCAST") != "1"


@dataclass
class Greeting(Channel):
    message: str
    count: int = 0


@dataclass
class DurableGreeting(Channel):
    message: str
    lock_notifications = True


@dataclass
class EverythingChannel(TriggerChannel):
    model = Everything


@dataclass
class ProfileChannel(TriggerChannel):
    model = Profile


@dataclass
class RestaurantChannel(TriggerChannel):
    model = Restaurant


@dataclass
class Sized(Channel):
    """Carries payloads of any size; the listener records their digest."""

    label: str
    body: str


@dataclass
class TicketChannel(TriggerChannel):
    """Model given as a label; one attempt only."""

    model = "app.Ticket"
    lock_notifications = True
    max_attempts = 1


@dataclass
class RetryProbe(Channel):
    """Durable, five attempts, one healthy and one always failing listener."""

    label: str
    lock_notifications = True
    max_attempts = 5


@dataclass
class LoudGreeting(Greeting):
    """A subclass: ``listen --channels ...Greeting`` takes it too, as in 1.3.1."""

    volume: int = 11


@dataclass
class UrgentGreeting(DurableGreeting):
    """A durable subclass, for process_stored_notifications([DurableGreeting])."""


@dataclass
class RetainedAuthorChannel(TriggerChannel):
    """Authors' row changes kept in the event log (no listener: subscriptions only)."""

    model = Author
    retention = timedelta(hours=1)


@dataclass
class RetainedGreeting(Channel):
    """An app channel kept in the event log."""

    message: str
    retention = timedelta(hours=1)


@dataclass
class Unheard(TriggerChannel):
    """No listener, no retention: no trigger publishes it."""

    model = Author


@dataclass
class AsyncJob(Channel):
    """Durable; its listener is an ``async def`` function."""

    message: str
    lock_notifications = True


@dataclass
class NoteChannel(TriggerChannel):
    """Tenants' notes, kept in the event log: the browser stream tests' channel."""

    model = Note
    retention = timedelta(hours=1)
