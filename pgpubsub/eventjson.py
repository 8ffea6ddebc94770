"""The JSON that browser streams and bridges send for an event.

A trigger channel's event becomes ``{"op", "model", "pk", "old", "new"}``,
where ``old`` and ``new`` hold only the fields the developer chose (by
default the primary key alone): a stream must never carry a column nobody
asked for, such as a password hash. An app channel's event is the object of
its fields.

Values are taken from the event as it is stored, the JSON PostgreSQL wrote
for each column (``to_json(row)``), without rebuilding model instances:
timestamps are ISO 8601 strings, numerics are JSON numbers, ``bytea`` is a
``"\\x..."`` hex string. Encoding works on bytes, so one event is encoded
once per process and variant, whatever the number of clients.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from django.core.exceptions import FieldDoesNotExist

from .channel import BaseChannel, Channel, TriggerChannel, locate_channel
from .exceptions import StreamConfigurationError
from .hub import Event

_encode = msgspec.json.Encoder().encode


class Variant(enum.Enum):
    """How an event looks to a client whose scope admits some of its rows."""

    #: The event as it happened (or no scope).
    FULL = "full"
    #: An update that moved the row into the client's scope: an INSERT with the new row only.
    ENTER = "enter"
    #: An update that moved the row out of the client's scope: a DELETE with the old row only.
    LEAVE = "leave"


class TriggerFormat:
    """Encodes the events of one trigger channel with a chosen set of fields."""

    def __init__(self, channel: type[TriggerChannel], fields: Sequence[str] | None) -> None:
        model = channel.get_model()
        meta = model._meta
        self.channel = channel
        self.label = meta.label_lower
        pk = meta.pk
        assert pk is not None and pk.column is not None
        self.pk_column: str = pk.column
        if isinstance(fields, str):
            raise StreamConfigurationError(
                f"fields for {channel.name()} must be a list of field names, got the string "
                f"{fields!r}; write [{fields!r}]"
            )
        names = list(fields) if fields is not None else [pk.name]
        self.fields = tuple((name, _column(channel, name)) for name in names)
        self.after_ops = after_operations(channel)

    def counts(self, event: Event) -> bool:
        """Whether the event is the row change to send (see :func:`after_operations`)."""
        return is_row_change(event, self.after_ops)

    def data(self, event: Event, variant: Variant) -> bytes:
        """The event's JSON as ``variant`` shows it."""
        wire = event.wire
        assert wire is not None
        old = wire.old
        new = wire.new
        op = event.op
        if variant is Variant.ENTER:
            op, old = "INSERT", None
        elif variant is Variant.LEAVE:
            op, new = "DELETE", None
        row = new if new is not None else old
        pk = row.get(self.pk_column) if row is not None else None
        return _encode(
            {
                "op": op,
                "model": self.label,
                "pk": pk,
                "old": self._pick(old),
                "new": self._pick(new),
            }
        )

    def _pick(self, row: dict[str, msgspec.Raw] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        return {name: row.get(column) for name, column in self.fields}


class AppFormat:
    """Encodes the events of one app channel: the object of its fields."""

    def __init__(self, channel: type[Channel]) -> None:
        self.channel = channel
        channel.codec()  # raises now if the channel's fields cannot be carried

    def counts(self, event: Event) -> bool:
        return True

    def data(self, event: Event, variant: Variant) -> bytes:
        wire = event.wire
        assert wire is not None
        raw = bytes(wire.kwargs)
        return raw if raw else b"{}"


Format = TriggerFormat | AppFormat

_OPERATIONS = ("INSERT", "UPDATE", "DELETE")


def after_operations(channel: type[TriggerChannel]) -> frozenset[str]:
    """The operations for which the channel has an AFTER row trigger.

    A trigger channel publishes one event per trigger that fires: with a
    ``pre_delete_listener`` and ``retention`` (which installs the AFTER
    triggers), a delete is published twice, by the BEFORE and the AFTER
    trigger. A client wants the row change once: for these operations only
    the AFTER trigger's event is sent.
    """
    from .registry import listeners_for

    if channel.retained():
        return frozenset(_OPERATIONS)
    keys: set[str] = set()
    for listener in listeners_for(channel):
        keys |= listener.keys or set()
    return frozenset(op for op in _OPERATIONS if f"after_{op.lower()}" in keys)


def is_row_change(event: Event, after_ops: frozenset[str]) -> bool:
    """Whether ``event`` is the one event of its row change (the AFTER trigger's, if any)."""
    if event.op in after_ops:
        return event.trigger == f"after_{event.op.lower()}"
    return True


def _column(channel: type[TriggerChannel], name: object) -> str:
    """The database column of the field ``name`` of the channel's model, or a clear error."""
    model = channel.get_model()
    meta = model._meta
    if not isinstance(name, str):
        raise StreamConfigurationError(
            f"fields for {channel.name()} must be field names (strings), got {name!r}"
        )
    try:
        field = meta.get_field(name)
    except FieldDoesNotExist:
        available = ", ".join(
            f.name
            for f in meta.concrete_fields
            if f.model._meta.concrete_model is meta.concrete_model
        )
        raise StreamConfigurationError(
            f"{meta.label} (the model of {channel.name()}) has no field {name!r}; "
            f"its fields are: {available}"
        ) from None
    column = getattr(field, "column", None)
    if not getattr(field, "concrete", False) or column is None:
        raise StreamConfigurationError(
            f"{meta.label}.{name} is not a column of {meta.db_table} (many-to-many fields, "
            f"reverse relations and generic relations cannot be sent); choose a concrete field"
        )
    field_model = getattr(field, "model", None)
    if field_model is not None and field_model._meta.concrete_model is not meta.concrete_model:
        raise StreamConfigurationError(
            f"{meta.label}.{name} is stored in the table of {field_model._meta.label} "
            f"(multi-table inheritance), not in {meta.db_table}, whose rows the events of "
            f"{channel.name()} carry; choose a field of {meta.label} itself"
        )
    return str(column)


FieldsSpec = Sequence[str] | Mapping[Any, Sequence[str]] | None


def formats(
    channels: Sequence[type[BaseChannel] | str], fields: FieldsSpec
) -> dict[type[BaseChannel], Format]:
    """The format of each channel, checking ``fields`` against the channels' models.

    ``fields`` is a list of field names for every trigger channel, or a
    mapping from channel (class or dotted path) to such a list; ``None``
    sends the primary key alone.
    """
    located = [locate_channel(channel) for channel in channels]
    per_channel: dict[type[BaseChannel], Sequence[str] | None] = {}
    if isinstance(fields, Mapping):
        for key, names in fields.items():
            channel = locate_channel(key)
            if channel not in located:
                raise StreamConfigurationError(
                    f"fields are given for {channel.name()}, which is not one of the "
                    f"stream's channels ({', '.join(c.name() for c in located)})"
                )
            per_channel[channel] = names
    found: dict[type[BaseChannel], Format] = {}
    for channel in located:
        channel.validate()
        if issubclass(channel, TriggerChannel):
            chosen = per_channel.get(channel) if isinstance(fields, Mapping) else fields
            found[channel] = TriggerFormat(channel, chosen)
        elif issubclass(channel, Channel):
            if isinstance(fields, Mapping) and channel in per_channel:
                raise StreamConfigurationError(
                    f"{channel.name()} is an app channel: its events carry all of its fields; "
                    "fields= applies to trigger channels only"
                )
            found[channel] = AppFormat(channel)
    return found
