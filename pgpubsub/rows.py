"""Model instances rebuilt from the rows trigger events carry.

Trigger payloads carry rows as PostgreSQL's ``to_json(row)`` renders them.
:class:`RowDecoder` rebuilds model instances from them with Django's own
field conversion and ``Model.from_db``, keyed by database column, so
``db_column`` works and rows written before or after a schema change still
deliver: unknown columns are ignored, missing ones deferred. It reads
nothing from the database (a deferred field loads on first access).
"""

from __future__ import annotations

import datetime
import decimal
import json
import logging
from collections.abc import Callable
from typing import Any

import msgspec
from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from .exceptions import PayloadError

logger = logging.getLogger("pgpubsub")


Converter = Callable[[msgspec.Raw], Any]


def _nullable(convert_value: Callable[[Any], Any]) -> Converter:
    """A converter of a column's JSON value: null is None, the rest goes to ``convert_value``."""

    def convert(raw: msgspec.Raw) -> Any:
        value = msgspec.json.decode(raw)
        return None if value is None else convert_value(value)

    return convert


def _generic(field: models.Field) -> Converter:
    return _nullable(field.to_python)


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
    def parse(value: str) -> bytes:
        return bytes.fromhex(value[2:]) if value.startswith("\\x") else value.encode()

    return _nullable(parse)


def _as_django_datetime(value: datetime.datetime) -> datetime.datetime:
    # What Django itself returns for a timestamptz column: aware with USE_TZ,
    # naive in the default time zone without it.
    if settings.USE_TZ:
        return value if timezone.is_aware(value) else timezone.make_aware(value)
    if timezone.is_aware(value):
        return timezone.make_naive(value, timezone.get_default_timezone())
    return value


def _datetime(field: models.Field) -> Converter:
    def parse(value: str) -> Any:
        parsed = parse_datetime(value)
        if parsed is None:
            return field.to_python(value)
        return _as_django_datetime(parsed)

    return _nullable(parse)


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

    def parse(value: str) -> Any:
        if value == "empty":
            return range_type(empty=True)
        lower, upper = value[1:-1].split(",", 1)
        return range_type(bound(lower), bound(upper), bounds=value[0] + value[-1])

    return _nullable(parse)


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
