"""Typed app-channel payloads: the codec of a :class:`pgpubsub.Channel` dataclass.

Payloads are (de)serialised by msgspec from the channel dataclass itself,
so every type msgspec supports (str, int, float, bool, None, Decimal,
datetime, date, time, timedelta, UUID, Enum, unions, list, tuple, set,
frozenset, dict, nested dataclasses) round-trips exactly.

Django model instances travel as their primary key. Decoding is pure: a
model-typed field decodes to a placeholder, an instance of the model that
holds only its primary key (:func:`placeholder`), and loading the instances
is an explicit step, :func:`resolve_models` (:meth:`ChannelCodec.resolve`),
which the worker runs right after decoding and which reads them through the
model's default manager, as before the split. A codec knows when it is
built whether any field can hold a model (:attr:`ChannelCodec.has_models`),
so channels without model fields pay nothing for that step.

Why a model instance and not a separate reference type: msgspec checks that
what its decoding hook returns is an instance of the field's type. A
placeholder is a real, unsaved-looking instance whose other fields are
deferred, so a ``__post_init__`` of the channel that reads a model field
during decoding still works (Django loads the deferred field on access).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import inspect
import math
import types
import typing
import uuid
from collections.abc import Iterable
from typing import Any

import msgspec
import msgspec.inspect as mi
from django.db import models
from django.db.models.base import ModelState

from .exceptions import ChannelDefinitionError, NotifyError

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


# Set in the __dict__ of a placeholder; a loaded instance never has it.
_PLACEHOLDER = "_pgpubsub_placeholder"


def placeholder(model: type[models.Model], pk: Any) -> models.Model:
    """An instance of ``model`` holding only the primary key ``pk``, to be loaded later.

    Built without ``__init__``, so no ``pre_init``/``post_init`` signal
    fires and nothing is read; its other fields are deferred.
    """
    instance = model.__new__(model)
    instance._state = ModelState()
    instance.__dict__[model._meta.pk.attname] = pk
    instance.__dict__[_PLACEHOLDER] = True
    return instance


def is_placeholder(value: Any) -> bool:
    """Whether ``value`` is a :func:`placeholder` (a model instance not loaded yet)."""
    return isinstance(value, models.Model) and _PLACEHOLDER in value.__dict__


def _load(value: models.Model) -> models.Model:
    return type(value)._default_manager.get(pk=value.pk)


def resolve_models(value: Any) -> Any:
    """``value`` with every :func:`placeholder` in it replaced by the instance it stands for.

    Walks what a payload can hold: dicts, lists, tuples (named ones too),
    sets, frozensets, dataclass instances and msgspec structs. Containers
    are rebuilt; dataclass instances, fresh from decoding, are updated in
    place.
    """
    if isinstance(value, models.Model):
        return _load(value) if _PLACEHOLDER in value.__dict__ else value
    if isinstance(value, dict):
        return {key: resolve_models(item) for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_models(item) for item in value]
    if isinstance(value, tuple):
        items = [resolve_models(item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, set | frozenset):
        return type(value)(resolve_models(item) for item in value)
    if isinstance(value, msgspec.Struct):
        changes = {name: resolve_models(getattr(value, name)) for name in value.__struct_fields__}
        return msgspec.structs.replace(value, **changes)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            if hasattr(value, field.name):
                # object.__setattr__: frozen dataclasses too (the instance is new).
                object.__setattr__(value, field.name, resolve_models(getattr(value, field.name)))
        return value
    return value


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
    # A model field arrives as its primary key; loading it is resolve_models()'s.
    if _is_model(tp):
        return placeholder(tp, obj)
    raise NotImplementedError(f"cannot decode {tp!r}")


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, models.Model)


def _custom_types(info: mi.Type, seen: set[type]) -> Iterable[Any]:
    """Yield the classes inside ``info`` that msgspec does not know (models, or unsupported)."""
    if isinstance(info, mi.CustomType):
        yield info.cls
        return
    if isinstance(info, mi.DataclassType | mi.StructType | mi.TypedDictType | mi.NamedTupleType):
        if info.cls in seen:
            return
        seen.add(info.cls)
        for field in info.fields:
            yield from _custom_types(field.type, seen)
        return
    for attr in ("item_type", "key_type", "value_type"):
        if hasattr(info, attr):
            yield from _custom_types(getattr(info, attr), seen)
    for attr in ("item_types", "types"):
        for inner in getattr(info, attr, ()):
            yield from _custom_types(inner, seen)


@dataclasses.dataclass(frozen=True)
class ChannelCodec:
    """Encoder and decoders for one :class:`pgpubsub.Channel` dataclass."""

    channel_name: str
    cls: type
    field_names: tuple[str, ...]
    encoder: msgspec.json.Encoder
    decoder: msgspec.json.Decoder[Any]
    #: Whether a field can hold a model instance (decoded as a :func:`placeholder`).
    has_models: bool = False

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
        has_models = False
        for field_info in info.fields:
            custom = list(_custom_types(field_info.type, set()))
            has_models = has_models or any(_is_model(found) for found in custom)
            bad = [getattr(c, "__qualname__", repr(c)) for c in custom if not _is_model(c)]
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
            has_models=has_models,
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

    def decode(self, raw: bytes | msgspec.Raw) -> dict[str, Any]:
        """The fields of an encoded payload, without database access.

        Model-typed fields hold placeholders (:func:`placeholder`);
        :meth:`resolve` loads them.
        """
        instance = self.decoder.decode(raw)
        return {name: getattr(instance, name) for name in self.field_names}

    def resolve(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """``kwargs`` with their model instances loaded (as they are, without model fields)."""
        return resolve_models(kwargs) if self.has_models else kwargs

    def decode_kwargs(self, raw: bytes | msgspec.Raw) -> dict[str, Any]:
        """The fields of an encoded payload as listeners receive them: :meth:`decode`,
        then :meth:`resolve`."""
        return self.resolve(self.decode(raw))


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
