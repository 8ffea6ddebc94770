"""Channels, declared the same way for both libraries.

No ``from __future__ import annotations`` here: django-pgpubsub 1.3.1 calls
the field annotations to decode payloads, so they must be real types.

A channel that needs a feature the installed library lacks (``retention``,
issue 14) is not declared; :data:`UNSUPPORTED` says why, and the harness
skips the measurements that need it.
"""

from dataclasses import dataclass
from datetime import timedelta

from pgpubsub import Channel, TriggerChannel

from .models import (
    BroadcastRow,
    DurableRow,
    LiveRow,
    TimedBroadcastRow,
    TimedDurableRow,
    TimedRetainedRow,
)

#: Channel class name -> why the installed library cannot declare it.
UNSUPPORTED: dict = {}


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


@dataclass
class TimedBroadcastChannel(TriggerChannel):
    model = TimedBroadcastRow


@dataclass
class TimedDurableChannel(TriggerChannel):
    model = TimedDurableRow
    lock_notifications = True


def supports_retention() -> bool:
    """Whether the installed library knows the ``retention`` channel setting.

    A library without it would silently ignore the class attribute (it is
    not a dataclass field), so the setting is looked up on the base class.
    """
    return hasattr(TriggerChannel, "retention") or "retention" in getattr(
        TriggerChannel, "_settings", ()
    )


if supports_retention():

    @dataclass
    class RetainedRowChannel(TriggerChannel):
        model = TimedRetainedRow
        retention = timedelta(minutes=10)

    @dataclass
    class LiveChannel(TriggerChannel):
        """Retention and no listener: read by subscriptions and browser streams only."""

        model = LiveRow
        retention = timedelta(minutes=30)

else:
    for _name in ("RetainedRowChannel", "LiveChannel"):
        UNSUPPORTED[_name] = "the installed library has no TriggerChannel.retention (issue 14)"
