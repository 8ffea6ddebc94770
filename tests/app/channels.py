"""Channels of the test app."""

from __future__ import annotations

from dataclasses import dataclass

from pgpubsub import Channel, TriggerChannel

from .models import Author, Everything, Order, Post, Profile, Restaurant


@dataclass
class AuthorChannel(TriggerChannel):
    model = Author


@dataclass
class PostChannel(TriggerChannel):
    model = Post


@dataclass
class OrderChannel(TriggerChannel):
    model = Order
    lock_notifications = True


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
class LoudGreeting(Greeting):
    """A subclass: ``listen --channels ...Greeting`` takes it too, as in 1.3.1."""

    volume: int = 11


@dataclass
class UrgentGreeting(DurableGreeting):
    """A durable subclass, for process_stored_notifications([DurableGreeting])."""
