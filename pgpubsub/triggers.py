"""Database triggers that publish row changes on a :class:`TriggerChannel`.

The triggers are django-pgtrigger triggers, so ``makemigrations`` writes them
into the app's migrations and ``migrate`` installs them. pgpubsub's own
migration installs the shared SQL they use (see ``migrations_templates/``).

Listener decorators create one trigger per (channel, timing, operation):

* AFTER triggers are statement-level with transition tables, so a bulk write
  costs one NOTIFY per statement, not per row. A broadcast channel's trigger
  builds the statement's events as JSON text with ``json_agg(to_json(row))``
  and hands them to ``pgpubsub_publish_v1()``; a durable channel's trigger
  inserts one outbox row per changed row with a single set-based INSERT
  (a transition table cannot be passed to a function) and sends one empty
  wake-up NOTIFY;
* BEFORE triggers are row-level (PostgreSQL offers transition tables only to
  AFTER triggers), call ``pgpubsub_publish_v1()`` for their row, and never
  alter or cancel the row operation.

:class:`Notify` and :class:`LockableNotify` are row-level triggers for use
with :func:`pgpubsub.trigger_listener`, where a custom condition is wanted.
"""

from __future__ import annotations

import json
from typing import Any

import pgtrigger
from django.db import models
from psycopg import sql

from .channel import BaseChannel, TriggerChannel

_OLD_TABLE = "pgpubsub_old"
_NEW_TABLE = "pgpubsub_new"


def _literal(value: str | bool) -> str:
    """Quote a value as an SQL literal for a trigger body compiled into a migration."""
    return sql.Literal(value).as_string(None)


def _publish_call(channel_name: str, durable: bool, key: str, events_sql: str) -> str:
    return (
        "PERFORM pgpubsub_publish_v1(\n"
        f"        {_literal(channel_name)},\n"
        f"        {_literal(durable)},\n"
        f"        {_literal(key)},\n"
        "        TG_OP,\n"
        f"        {events_sql}\n"
        "    );\n"
    )


def _row_events(model: Any, durable: bool) -> str:
    """The events argument of a row-level trigger's ``pgpubsub_publish_v1()`` call.

    A durable event is stored as it is (with the context merged in by the
    function when one is set), so it carries the stored shape described at
    :func:`_stored_head`; a broadcast one carries only the rows.
    """
    if not durable:
        return "json_build_array(json_build_object('old', to_json(OLD), 'new', to_json(NEW)))"
    return (
        "json_build_array(json_build_object("
        f"'app', {_literal(model._meta.app_label)}, 'model', {_literal(model.__name__)}, "
        "'context', '{}'::json, 'old', to_json(OLD), 'new', to_json(NEW)))"
    )


_RETURN_ROW = "IF TG_OP = 'DELETE' THEN\n        RETURN OLD;\n    END IF;\n    RETURN NEW;"

# Statement-level AFTER triggers read the rows of the statement from the
# transition tables: the FROM clause, and the old and new row of each event
# (None where the operation has none).
_STATEMENT_SOURCES = {
    "INSERT": f"FROM {_NEW_TABLE} AS r",
    "DELETE": f"FROM {_OLD_TABLE} AS r",
    # PostgreSQL fills the old and new transition tables side by side, one
    # pair per updated row, so their scan positions pair the rows even when
    # the update changes the primary key.
    "UPDATE": (
        f"FROM (SELECT r, row_number() OVER () AS i FROM {_OLD_TABLE} AS r) AS o"
        f" JOIN (SELECT r, row_number() OVER () AS i FROM {_NEW_TABLE} AS r) AS n"
        " ON n.i = o.i"
    ),
}
_STATEMENT_ROWS: dict[str, tuple[str | None, str | None]] = {
    "INSERT": (None, "r"),
    "DELETE": ("r", None),
    "UPDATE": ("o.r", "n.r"),
}


def _broadcast_statement_body(channel_name: str, key: str, op: str) -> str:
    # One NOTIFY per statement, its events built as JSON text (no jsonb
    # round trip) and handed to the shared function.
    old, new = _STATEMENT_ROWS[op]
    fields = ", ".join(
        f"'{name}', to_json({row})" for name, row in (("old", old), ("new", new)) if row
    )
    events = f"(SELECT json_agg(json_build_object({fields})) {_STATEMENT_SOURCES[op]})"
    return _publish_call(channel_name, False, key, events) + "    RETURN NULL;"


def _stored_head(model: Any, key: str, op: str) -> str:
    """SQL for the start of a stored event's JSON text, up to its ``context`` value.

    A stored trigger event has django-pgpubsub 1.3.1's shape, ``app``,
    ``model``, ``context``, ``old`` and ``new`` (``{}`` and ``null`` where
    there is none), so listener filters and queries written for 1.3.1's
    rows keep matching, plus pgpubsub's ``trigger`` and ``op``. It is
    computed once per statement.
    """
    keys = {"app": model._meta.app_label, "model": model.__name__, "trigger": key, "op": op}
    head = "{" + "".join(f"{json.dumps(k)}:{json.dumps(v)}," for k, v in keys.items())
    head += '"context":'
    return (
        f"{_literal(head)}"
        " || COALESCE(NULLIF(current_setting('pgpubsub.notification_context', true), ''), '{}')"
    )


def _durable_statement_body(channel_name: str, op: str) -> str:
    # One set-based INSERT into the outbox per statement. A transition table
    # cannot be handed to a function, so this one statement lives here
    # rather than in pgpubsub_publish_v1(). Each event is assembled as JSON
    # text around to_json(row) and parsed once into jsonb: measured cheaper
    # per row than jsonb_build_object() of the same keys, and every per-row
    # operation here costs every writer.
    old, new = _STATEMENT_ROWS[op]

    def row(name: str, expr: str | None) -> str:
        return f'"{name}":null' if expr is None else f"\"{name}\":' || to_json({expr})::text || '"

    event = f"(pgpubsub_head || ',{row('old', old)},{row('new', new)}}}')::jsonb"
    return (
        "INSERT INTO pgpubsub_notification (channel, payload)\n"
        f"        SELECT {_literal(channel_name)}, {event}\n"
        f"        {_STATEMENT_SOURCES[op]};\n"
        "    IF FOUND THEN\n"
        f"        PERFORM pg_notify({_literal(channel_name)}, '');\n"
        "    END IF;\n"
        "    RETURN NULL;"
    )


class Notify(pgtrigger.Trigger):
    """A row-level trigger publishing each changed row on a channel.

    Give it to :func:`pgpubsub.trigger_listener`, which binds it to the
    channel; or pass ``channel=`` yourself. Without a channel the trigger's
    ``name`` is used as the database channel name (django-pgpubsub 1.3.1
    behaviour). The trigger returns the row unchanged, so a BEFORE trigger
    never alters or cancels the operation.
    """

    channel: type[BaseChannel] | None = None
    durable: bool | None = None

    def __init__(self, *, channel: type[BaseChannel] | None = None, **kwargs: Any) -> None:
        if channel is not None:
            self.channel = channel
        super().__init__(**kwargs)

    def bind(self, channel: type[BaseChannel]) -> None:
        if self.channel is None:
            self.channel = channel

    def _durable(self) -> bool:
        if self.durable is not None:
            return self.durable
        return bool(self.channel and self.channel.lock_notifications)

    def get_func(self, model: models.Model) -> str:
        name = self.channel.listen_safe_name() if self.channel else str(self.name)
        durable = self._durable()
        events = _row_events(model, durable)
        return _publish_call(name, durable, trigger_key(self), events) + f"    {_RETURN_ROW}"


class LockableNotify(Notify):
    """A :class:`Notify` trigger whose notifications are durable (stored outbox rows)."""

    durable = True


class ChannelTrigger(pgtrigger.Trigger):
    """The trigger a listener decorator installs for one (channel, timing, operation)."""

    def __init__(
        self,
        *,
        channel: type[TriggerChannel],
        when: pgtrigger.When,
        operation: pgtrigger.Operation,
    ) -> None:
        self.channel = channel
        op = str(operation)
        timing = str(when)
        kwargs: dict[str, Any] = {}
        if timing == "AFTER":
            kwargs["level"] = pgtrigger.Statement
            kwargs["referencing"] = pgtrigger.Referencing(
                **{
                    "INSERT": {"new": _NEW_TABLE},
                    "UPDATE": {"old": _OLD_TABLE, "new": _NEW_TABLE},
                    "DELETE": {"old": _OLD_TABLE},
                }[op]
            )
        super().__init__(
            name=trigger_name(channel, timing, op),
            when=when,
            operation=operation,
            **kwargs,
        )
        self._op = op
        self._timing = timing

    def get_declare(self, model: models.Model) -> list[tuple[str, str]]:
        if self._timing == "AFTER" and self.channel.lock_notifications:
            head = _stored_head(model, trigger_key(self), self._op)
            return [("pgpubsub_head", f"text := {head}")]
        return []

    def get_func(self, model: models.Model) -> str:
        name = self.channel.listen_safe_name()
        key = trigger_key(self)
        if self._timing == "AFTER":
            if self.channel.lock_notifications:
                return _durable_statement_body(name, self._op)
            return _broadcast_statement_body(name, key, self._op)
        durable = bool(self.channel.lock_notifications)
        events = _row_events(model, durable)
        return _publish_call(name, durable, key, events) + f"    {_RETURN_ROW}"


#: Keys of the triggers listener decorators install, as carried in events.
DECORATOR_KEYS = frozenset(
    f"{timing}_{op}" for timing in ("before", "after") for op in ("insert", "update", "delete")
)


def trigger_key(trigger: pgtrigger.Trigger) -> str:
    """The short key by which a trigger's events name it (``"trigger"`` in payloads).

    ``after_insert`` and the like for the triggers listener decorators
    install (the channel is known from the notification), the trigger's own
    name for a custom trigger. Shorter than the PostgreSQL trigger name, it
    keeps every stored row small.
    """
    if isinstance(trigger, ChannelTrigger):
        return f"{trigger._timing}_{trigger._op}".lower()
    return str(trigger.name)


def trigger_name(channel: type[BaseChannel], timing: str, operation: str) -> str:
    """The django-pgtrigger name of a channel's trigger, e.g. ``pgpubsub_1a2b3_after_insert``."""
    return f"{channel.listen_safe_name()}_{timing.lower()}_{operation.lower()}"
