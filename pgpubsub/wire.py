"""The wire format: what a NOTIFY or a stored notification carries, and decoding it.

A broadcast NOTIFY carries a :class:`Message`: a batch of :class:`Event`
objects (inline), or a reference to a payload too large for a NOTIFY
(``ref``, a row of ``pgpubsub_payload``). A stored notification's
``payload`` column holds one :class:`Event`. Both are written by
``pgpubsub_publish_v1()`` and the triggers (``migrations_templates/`` and
:mod:`pgpubsub.sql`) and by :func:`pgpubsub.notify`.

Decoding here is pure: no database access. Fetching a referenced payload is
a separate, explicit step (:func:`pgpubsub.store.fetch_payload`), and so is
turning an event into listener arguments (:mod:`pgpubsub.codec` for app
channels, :mod:`pgpubsub.rows` for trigger channels). Fields that nothing
reads are not declared, so decoding skips them (msgspec ignores unknown
fields): the publish function's ``seq`` (it only keeps identical messages
apart) and ``op``.
"""

from __future__ import annotations

from typing import Any

import msgspec


class Event(msgspec.Struct, omit_defaults=True):
    """One event as carried in a NOTIFY message or a stored notification.

    Trigger events carry ``trigger`` (the key of the trigger that fired)
    and the ``old``/``new`` rows, and when stored also ``app`` and
    ``model``, the model the rows belong to; app-level events carry
    ``kwargs``, the channel's fields. ``context`` is the notification
    context, if one was set. Trigger events also carry ``op`` (INSERT,
    UPDATE or DELETE), which subscriptions hand out with each event.
    """

    trigger: str | None = None
    op: str | None = None
    app: str | None = None
    model: str | None = None
    old: dict[str, msgspec.Raw] | None = None
    new: dict[str, msgspec.Raw] | None = None
    kwargs: msgspec.Raw = msgspec.Raw(b"")
    context: dict[str, Any] | None = None


class Message(msgspec.Struct):
    """A broadcast NOTIFY payload: a batch of events, or a reference to one.

    A payload sent by django-pgpubsub 1.3.1's triggers or ``notify()`` (one
    event at the top level: ``old``/``new`` or ``kwargs``) is read as a batch
    of one, so notifications in flight during a switch are still delivered.
    """

    trigger: str | None = None
    context: dict[str, Any] | None = None
    #: Publication time (seconds since the epoch), for latency figures.
    ts: float | None = None
    events: list[Event] = []
    ref: int | None = None
    old: dict[str, msgspec.Raw] | None = None
    new: dict[str, msgspec.Raw] | None = None
    kwargs: msgspec.Raw = msgspec.Raw(b"")

    def __post_init__(self) -> None:
        if not self.events and (self.old is not None or self.new is not None or self.kwargs):
            self.events = [Event(old=self.old, new=self.new, kwargs=self.kwargs)]


message_decoder = msgspec.json.Decoder(Message)
event_decoder = msgspec.json.Decoder(Event)
_string_decoder = msgspec.json.Decoder(str)


def decode_stored_event(payload: str | bytes) -> Event:
    """Decode the ``payload`` column of a stored notification (as JSON text).

    A payload stored as a JSON string that holds the event's JSON, as
    django-pgpubsub 1.3.1's ``notify()`` wrote them, is read too.
    """
    if payload[:1] in ('"', b'"'):
        payload = _string_decoder.decode(payload)
    return event_decoder.decode(payload)


def preview(payload: str | bytes, limit: int = 120) -> str:
    """A short, printable excerpt of a payload for log messages."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"
