"""Channels, declared the same way for both libraries.

No ``from __future__ import annotations`` here: django-pgpubsub 1.3.1 calls
the field annotations to decode payloads, so they must be real types.
"""

from dataclasses import dataclass

from pgpubsub import Channel, TriggerChannel

from .models import BroadcastRow, DurableRow


@dataclass
class BroadcastRowChannel(TriggerChannel):
    model = BroadcastRow


@dataclass
class DurableRowChannel(TriggerChannel):
    model = DurableRow
    lock_notifications = True


@dataclass
class BroadcastMessage(Channel):
    n: int


@dataclass
class DurableMessage(Channel):
    n: int
    lock_notifications = True
