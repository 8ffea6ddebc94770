"""Encoding and decoding of notification payloads.

Typed channel payloads are (de)serialised by msgspec from the channel
dataclass itself, so every type msgspec supports (str, int, float, bool,
None, Decimal, datetime, date, time, timedelta, UUID, Enum, unions, list,
tuple, set, frozenset, dict, nested dataclasses) round-trips exactly.
Django model instances travel as their primary key and are fetched again
on delivery.

Trigger payloads carry rows as PostgreSQL's ``to_json(row)`` (broadcast) or
``to_jsonb(row)`` (durable) renders them;
:class:`RowDecoder` rebuilds model instances from them with Django's own
field conversion, keyed by database column so ``db_column`` works and so
rows written before or after a schema change still deliver.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import inspect
import json
import logging
import math
import types
import typing
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import msgspec.inspect as mi
from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .exceptions import ChannelDefinitionError, NotifyError, PayloadError

logger = logging.getLogger("pgpubsub")

# Python objects that msgspec.convert() accepts as they are when checking
# notify() arguments against the channel's field types.
_BUILTIN_TYPES = (
    datetime.datetime,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    decimal.Decimal,
    uuid.UUID,
    bytes,
    bytearray,
)


class Event(msgspec.Struct, omit_defaults=True):
    """One event as carried in a NOTIFY message or a stored notification.

    Trigger events carry ``trigger`` (the key of the trigger that fired),
    ``op`` (INSERT/UPDATE/DELETE) and the ``old``/``new`` rows, and when
    stored also ``app`` and ``model``, the model the rows belong to;
    app-level events carry ``kwargs``, the channel's fields. ``context`` is
    the notification context, if one was set.
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
    op: str | None = None
    context: dict[str, Any] | None = None
    seq: int | None = None
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


# --------------------------------------------------------------------------
# Typed channel payloads


def _encode_hook(obj: Any) -> Any:
    if isinstance(obj, models.Model):
        return obj.pk
    raise NotImplementedError(f"cannot encode {type(obj).__name__} values")


def _check_hook(tp: type, obj: Any) -> Any:
    # Used when checking notify() arguments: a model field takes an instance.
    if isinstance(tp, type) and issubclass(tp, models.Model) and isinstance(obj, tp):
        return obj
    raise TypeError(f"Expected `{tp.__name__}` instance, got `{type(obj).__name__}`")


def _decode_hook(tp: type, obj: Any) -> Any:
    # Used by the worker: a model field arrives as its primary key.
    if isinstance(tp, type) and issubclass(tp, models.Model):
        return tp._default_manager.get(pk=obj)
    raise NotImplementedError(f"cannot decode {tp!r}")


def _unsupported(info: mi.Type, seen: set[type]) -> Iterable[str]:
    """Yield the names of types inside ``info`` that cannot be carried."""
    if isinstance(info, mi.CustomType):
        if not (isinstance(info.cls, type) and issubclass(info.cls, models.Model)):
            yield getattr(info.cls, "__qualname__", repr(info.cls))
        return
    if isinstance(info, mi.DataclassType | mi.StructType | mi.TypedDictType | mi.NamedTupleType):
        if info.cls in seen:
            return
        seen.add(info.cls)
        for field in info.fields:
            yield from _unsupported(field.type, seen)
        return
    for attr in ("item_type", "key_type", "value_type"):
        if hasattr(info, attr):
            yield from _unsupported(getattr(info, attr), seen)
    for attr in ("item_types", "types"):
        for inner in getattr(info, attr, ()):
            yield from _unsupported(inner, seen)


@dataclasses.dataclass(frozen=True)
class ChannelCodec:
    """Encoder and decoders for one :class:`pgpubsub.Channel` dataclass."""

    channel_name: str
    cls: type
    field_names: tuple[str, ...]
    encoder: msgspec.json.Encoder
    decoder: msgspec.json.Decoder[Any]

    @classmethod
    def build(cls, channel_cls: type, channel_name: str) -> ChannelCodec:
        own_annotations = inspect.get_annotations(channel_cls)
        if not dataclasses.is_dataclass(channel_cls) or (
            own_annotations and "__dataclass_fields__" not in channel_cls.__dict__
        ):
            raise ChannelDefinitionError(
                channel_name, "a Channel must be a dataclass; decorate it with @dataclass"
            )
        fields = [f for f in dataclasses.fields(channel_cls) if f.init]
        try:
            codec_cls = _with_variadic_tuples(channel_cls)
            info = mi.type_info(codec_cls)
        except (TypeError, NameError) as exc:
            raise ChannelDefinitionError(
                channel_name, f"its field types cannot be carried in a payload: {exc}"
            ) from exc
        assert isinstance(info, mi.DataclassType)
        for field_info in info.fields:
            bad = list(_unsupported(field_info.type, set()))
            if bad:
                annotation = next(f.type for f in fields if f.name == field_info.name)
                raise ChannelDefinitionError(
                    channel_name,
                    f"type {annotation!r} cannot be carried in a payload "
                    f"(unsupported: {', '.join(sorted(set(bad)))}). Use str, int, float, bool, "
                    "None, Decimal, datetime, date, time, timedelta, UUID, Enum, unions, "
                    "list, tuple, set, frozenset, dict, dataclasses or Django models.",
                    field=field_info.name,
                )
        try:
            decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
                codec_cls, dec_hook=_decode_hook
            )
        except TypeError as exc:
            raise ChannelDefinitionError(
                channel_name, f"its field types cannot be carried in a payload: {exc}"
            ) from exc
        encoder = msgspec.json.Encoder(enc_hook=_encode_hook, decimal_format="string")
        return cls(
            channel_name=channel_name,
            cls=codec_cls,
            field_names=tuple(f.name for f in fields),
            encoder=encoder,
            decoder=decoder,
        )

    def encode_kwargs(self, kwargs: dict[str, Any]) -> bytes:
        """Check ``kwargs`` against the channel's fields and encode them.

        Raises :class:`NotifyError` naming the channel and the field at fault.
        """
        unexpected = sorted(set(kwargs) - set(self.field_names))
        if unexpected:
            raise NotifyError(
                self.channel_name,
                f"{self.channel_name} has no field {unexpected[0]!r} "
                f"(its fields: {', '.join(self.field_names) or 'none'})",
                field=unexpected[0],
            )
        try:
            instance: Any = msgspec.convert(
                kwargs, self.cls, dec_hook=_check_hook, builtin_types=_BUILTIN_TYPES
            )
        except msgspec.ValidationError as exc:
            field = _field_from_error(str(exc))
            raise NotifyError(
                self.channel_name,
                f"invalid arguments for {self.channel_name}: {exc}",
                field=field,
            ) from exc
        try:
            encoded = self.encoder.encode(instance)
        except (TypeError, ValueError, NotImplementedError) as exc:
            raise NotifyError(
                self.channel_name, f"cannot encode a payload for {self.channel_name}: {exc}"
            ) from exc
        if b"\\u0000" in encoded:
            field = next((k for k, v in kwargs.items() if "\\x00" in repr(v)), None)
            raise NotifyError(
                self.channel_name,
                f"{self.channel_name}: a string contains a NUL character (\\x00), which "
                "PostgreSQL cannot store in JSON",
                field=field,
            )
        if b"null" in encoded:
            # JSON has no NaN or infinity: msgspec writes them as null, which
            # would arrive as None or fail. Find the culprit only when a null
            # is present, so the common case costs nothing.
            for name in self.field_names:
                path = _non_finite_path(kwargs.get(name), name)
                if path:
                    raise NotifyError(
                        self.channel_name,
                        f"{self.channel_name}.{path} is not a finite number; JSON payloads "
                        "cannot carry NaN or infinity",
                        field=name,
                    )
        return encoded

    def decode_kwargs(self, raw: bytes | msgspec.Raw) -> dict[str, Any]:
        instance = self.decoder.decode(raw)
        return {name: getattr(instance, name) for name in self.field_names}


def _variadic(tp: Any) -> Any:
    """``tp`` with every one-element ``Tuple[X]`` inside it read as ``Tuple[X, ...]``."""
    args = typing.get_args(tp)
    if not args:
        return tp
    origin = typing.get_origin(tp)
    if origin is tuple and len(args) == 1:
        return tuple[_variadic(args[0]), ...]  # type: ignore[misc]
    if origin is typing.Annotated:
        return tp
    new_args = tuple(_variadic(arg) for arg in args)
    if all(new is old for new, old in zip(new_args, args)):
        return tp
    if origin in (typing.Union, types.UnionType):
        return typing.Union[new_args]  # noqa: UP007 - a Union built at run time
    if hasattr(tp, "copy_with"):
        return tp.copy_with(new_args)
    return types.GenericAlias(origin, new_args)


def _with_variadic_tuples(channel_cls: type) -> type:
    """The dataclass the codec reads and writes for ``channel_cls``.

    django-pgpubsub 1.3.1 carried a field annotated ``Tuple[X]`` as a tuple
    of X of any length (the only tuple annotation it could carry), and its
    users send such tuples. Typing reads ``Tuple[X]`` as a tuple of exactly
    one X, so the codec reads the channel through a copy of the dataclass
    whose one-element tuple annotations become ``Tuple[X, ...]``. The
    channel class itself is left as declared; without such a field it is
    used as it is.
    """
    hints = typing.get_type_hints(channel_cls, include_extras=True)
    fields = dataclasses.fields(channel_cls)
    read = {field.name: _variadic(hints.get(field.name, field.type)) for field in fields}
    if all(read[field.name] is hints.get(field.name, field.type) for field in fields):
        return channel_cls
    namespace: dict[str, Any] = {"__module__": channel_cls.__module__}
    if "__post_init__" in dir(channel_cls):
        namespace["__post_init__"] = channel_cls.__post_init__  # type: ignore[attr-defined]
    return dataclasses.make_dataclass(
        channel_cls.__name__,
        [
            (
                field.name,
                read[field.name],
                dataclasses.field(
                    default=field.default,
                    default_factory=field.default_factory,
                    init=field.init,
                    kw_only=field.kw_only,
                ),
            )
            for field in fields
        ],
        namespace=namespace,
    )


def _non_finite_path(value: Any, path: str) -> str | None:
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            found = _non_finite_path(key, f"{path}[{key!r}]") or _non_finite_path(
                item, f"{path}[{key!r}]"
            )
            if found:
                return found
    elif isinstance(value, list | tuple | set | frozenset):
        for index, item in enumerate(value):
            found = _non_finite_path(item, f"{path}[{index}]")
            if found:
                return found
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            found = _non_finite_path(getattr(value, field.name), f"{path}.{field.name}")
            if found:
                return found
    return None


def _field_from_error(message: str) -> str | None:
    # msgspec reports "... - at `$.field...`" or "Object missing required field `x`".
    if "required field `" in message:
        return message.split("required field `", 1)[1].split("`", 1)[0]
    if "`$." in message:
        rest = message.split("`$.", 1)[1]
        return rest.split("`", 1)[0].split(".", 1)[0].split("[", 1)[0]
    return None


# --------------------------------------------------------------------------
# Model rows


Converter = Callable[[msgspec.Raw], Any]


def _generic(field: models.Field) -> Converter:
    to_python = field.to_python

    def convert(raw: msgspec.Raw) -> Any:
        value = msgspec.json.decode(raw)
        return None if value is None else to_python(value)

    return convert


_decimal_decoder = msgspec.json.Decoder(decimal.Decimal | None)
# Numbers inside arrays are read as Decimal so no precision is lost before the
# element field converts them.
_exact_numbers_decoder = msgspec.json.Decoder(float_hook=decimal.Decimal)


def _decimal(field: models.Field) -> Converter:
    return _decimal_decoder.decode


def _json(field: models.Field) -> Converter:
    decoder = getattr(field, "decoder", None)

    def convert(raw: msgspec.Raw) -> Any:
        # The column's JSON value arrives already parsed into the row's JSON;
        # parse it with the field's own decoder, as Django would.
        return json.loads(bytes(raw), cls=decoder)

    return convert


def _binary(field: models.Field) -> Converter:
    def convert(raw: msgspec.Raw) -> Any:
        value = msgspec.json.decode(raw)
        if value is None:
            return None
        return bytes.fromhex(value[2:]) if value.startswith("\\x") else value.encode()

    return convert


def _as_django_datetime(value: datetime.datetime) -> datetime.datetime:
    # What Django itself returns for a timestamptz column: aware with USE_TZ,
    # naive in the default time zone without it.
    if settings.USE_TZ:
        return value if timezone.is_aware(value) else timezone.make_aware(value)
    if timezone.is_aware(value):
        return timezone.make_naive(value, timezone.get_default_timezone())
    return value


def _datetime(field: models.Field) -> Converter:
    def convert(raw: msgspec.Raw) -> Any:
        value = msgspec.json.decode(raw)
        if value is None:
            return None
        parsed = parse_datetime(value)
        if parsed is None:
            return field.to_python(value)
        return _as_django_datetime(parsed)

    return convert


def _array(field: Any) -> Converter:
    base = field.base_field

    def walk(value: Any) -> Any:
        if isinstance(value, list):
            return [walk(item) for item in value]
        return None if value is None else base.to_python(value)

    def convert(raw: msgspec.Raw) -> Any:
        return walk(_exact_numbers_decoder.decode(raw))

    return convert


def _range(field: Any) -> Converter:
    base = field.base_field
    range_type = field.range_type

    def bound(text: str) -> Any:
        text = text.strip('"')
        if text == "":
            return None
        value = base.to_python(text)
        return _as_django_datetime(value) if isinstance(value, datetime.datetime) else value

    def convert(raw: msgspec.Raw) -> Any:
        value = msgspec.json.decode(raw)
        if value is None:
            return None
        if value == "empty":
            return range_type(empty=True)
        lower, upper = value[1:-1].split(",", 1)
        return range_type(bound(lower), bound(upper), bounds=value[0] + value[-1])

    return convert


def _converter(field: models.Field) -> Converter:
    if isinstance(field, models.JSONField):
        return _json(field)
    if isinstance(field, models.DecimalField):
        return _decimal(field)
    if isinstance(field, models.BinaryField):
        return _binary(field)
    if isinstance(field, models.DateTimeField):
        return _datetime(field)
    internal = field.get_internal_type()
    if internal == "ArrayField":
        return _array(field)
    if hasattr(field, "range_type"):
        return _range(field)
    if isinstance(field, models.ForeignKey):
        target = field.target_field
        while isinstance(target, models.ForeignKey):
            target = target.target_field
        return _converter(target)
    return _generic(field)


class RowDecoder:
    """Rebuilds model instances of one model from ``to_json(row)`` objects."""

    def __init__(self, model: type[models.Model], channel_name: str) -> None:
        self.model = model
        self.channel_name = channel_name
        concrete = model._meta.concrete_model
        # (column, attname, converter, local): inherited fields of a
        # multi-table child live in the parent's table, so the child's row
        # never has them; they load from the database on first access.
        self.fields = [
            (
                field.column,
                field.attname,
                _converter(field),
                field.model._meta.concrete_model is concrete,
            )
            for field in model._meta.concrete_fields
            # Always true (a concrete field is one with a column); says so to
            # django-stubs 6, which types Field.column as str | None.
            if field.column is not None
        ]
        self._by_attname = {field.attname: field for field in model._meta.concrete_fields}
        self._warned = False

    def check_model(self, app: str | None, model: str | None, *, required: bool) -> None:
        """Raise :class:`PayloadError` unless an event's ``app``/``model`` name this model.

        Stored trigger events name their model (``required``): a stored
        notification can outlive a change of its channel's ``model``, and
        rebuilding its rows as another model would go unnoticed, since
        unknown columns are ignored and missing ones deferred.
        """
        meta = self.model._meta
        if app is None or model is None:
            if required:
                raise PayloadError(
                    self.channel_name,
                    "the stored event does not name its model (no 'app' and 'model' keys); "
                    f"expected {meta.app_label}.{self.model.__name__}",
                )
            return
        if app != meta.app_label or model.lower() != meta.model_name:
            raise PayloadError(
                self.channel_name,
                f"the event is for the model {app}.{model}, but the channel's model is "
                f"{meta.app_label}.{self.model.__name__}",
            )

    def build(
        self, row: dict[str, msgspec.Raw] | None, using: str, *, fill_defaults: bool = False
    ) -> models.Model | None:
        """The instance ``row`` describes, as if loaded from the database ``using``.

        Fields of the model missing from the row are deferred (loaded from
        the database on first access), or with ``fill_defaults`` given their
        default, as django-pgpubsub 1.3.1's deserializer did.
        """
        if row is None:
            return None
        names: list[str] = []
        values: list[Any] = []
        missing: list[str] = []
        for column, attname, convert, local in self.fields:
            raw = row.get(column)
            if raw is None:
                if local and fill_defaults:
                    names.append(attname)
                    values.append(self._by_attname[attname].get_default())
                elif local:
                    missing.append(column)
                continue
            names.append(attname)
            values.append(convert(raw))
        if missing and not self._warned:
            self._warned = True
            logger.warning(
                "pgpubsub: rows on channel %s lack columns %s of %s (written before a "
                "schema change?); those fields are deferred (read from the database on access)",
                self.channel_name,
                ", ".join(missing),
                self.model._meta.label,
            )
        return self.model.from_db(using, names, values)
