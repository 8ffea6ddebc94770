"""Database triggers that publish row changes on a :class:`TriggerChannel`.

The triggers are django-pgtrigger triggers, so ``makemigrations`` writes them
into the app's migrations and ``migrate`` installs them. pgpubsub's own
migration installs the shared SQL they use (see ``migrations_templates/``).

Listener decorators create one trigger per (channel, timing, operation):

* AFTER triggers are statement-level with transition tables, so a bulk write
  costs one set-based INSERT per table and at most one NOTIFY per
  statement, not one per row. The events of a durable channel go to the
  outbox (``pgpubsub_notification``), those of a retained channel to the
  event log (``pgpubsub_event``), the others to the broadcast table
  (``pgpubsub_broadcast``); the wake-up NOTIFY is sent only when a reader of
  the channel may be asleep (:mod:`pgpubsub.wakeups`);
* BEFORE triggers are row-level (PostgreSQL offers transition tables only to
  AFTER triggers), call ``pgpubsub_publish_v2()`` for their row, and never
  alter or cancel the row operation.

:class:`Notify` and :class:`LockableNotify` are row-level triggers for use
with :func:`pgpubsub.trigger_listener`, where a custom condition is wanted.

This module decides which trigger a listener needs; the PL/pgSQL text of
the trigger bodies is written by the trigger-body functions of
``pgpubsub.sql``, with all of pgpubsub's other SQL.
"""

from __future__ import annotations

from typing import Any

import pgtrigger
from django.db import models
from pgtrigger import compiler

from . import sql
from .channel import BaseChannel, TriggerChannel
from .wakeups import wake_key


def _app_and_model(model: Any) -> tuple[str, str]:
    """The app label and class name of a model (django-pgtrigger passes the class)."""
    return model._meta.app_label, model.__name__


class TriggerSql(compiler.UpsertTriggerSql):
    """The installation SQL of a pgpubsub trigger (``pgpubsub.sql.TRIGGER_INSTALL``).

    Migrations name this class, so it stays importable under this name.
    """

    def get_template(self) -> str:
        return sql.TRIGGER_INSTALL


class StatementTriggerSql(compiler.UpsertTriggerSql):
    """The installation SQL of a listener decorator's statement trigger
    (``pgpubsub.sql.STATEMENT_TRIGGER_INSTALL``): its body tests
    ``pgtrigger.ignore`` itself (see ``pgpubsub.sql.statement_body``).

    Migrations name this class, so it stays importable under this name.
    """

    def get_template(self) -> str:
        return sql.STATEMENT_TRIGGER_INSTALL


class PgpubsubTrigger(pgtrigger.Trigger):
    """A django-pgtrigger trigger installed with :class:`TriggerSql`.

    Its function honours ``pgtrigger.ignore()`` with a string search of the
    ``pgtrigger.ignore`` setting, where django-pgtrigger's own wrapper calls
    a function that catches an error in a subtransaction on every statement
    of every writer (6 to 22 µs of server CPU per transaction in
    ``bench/trigger_cost.py``, see ``docs/benchmarks.rst``).
    """

    #: The class of its installation SQL.
    install_sql: type[compiler.UpsertTriggerSql] = TriggerSql

    def compile(self, model: models.Model) -> compiler.Trigger:
        compiled = super().compile(model)
        kwargs = dict(compiled.sql.kwargs)
        kwargs.pop("ignore_func_name", None)
        return compiler.Trigger(name=compiled.name, sql=self.install_sql(**kwargs))


class Notify(PgpubsubTrigger):
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

    def _flags(self) -> int:
        retained = bool(self.channel and self.channel.retained())
        return (1 if self._durable() else 0) | (2 if retained else 0)

    def get_func(self, model: models.Model) -> str:
        name = self.channel.listen_safe_name() if self.channel else str(self.name)
        events = sql.row_events(*_app_and_model(model), trigger_key(self), self._durable())
        call = sql.publish_call(name, wake_key(name), self._flags(), events)
        return call + f"    {sql.RETURN_ROW}"


class LockableNotify(Notify):
    """A :class:`Notify` trigger whose notifications are durable (stored outbox rows)."""

    durable = True


class ChannelTrigger(PgpubsubTrigger):
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
                    "INSERT": {"new": sql.NEW_TABLE},
                    "UPDATE": {"old": sql.OLD_TABLE, "new": sql.NEW_TABLE},
                    "DELETE": {"old": sql.OLD_TABLE},
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
        if timing == "AFTER":
            self.install_sql = StatementTriggerSql

    def get_func(self, model: models.Model) -> str:
        channel = self.channel
        name = channel.listen_safe_name()
        key = trigger_key(self)
        if self._timing == "AFTER":
            app_label, model_name = _app_and_model(model)
            return sql.statement_body(
                name,
                channel.wake_key(),
                key,
                self._op,
                app_label=app_label,
                model_name=model_name,
                durable=bool(channel.lock_notifications),
                retained=channel.retained(),
            )
        events = sql.row_events(*_app_and_model(model), key, bool(channel.lock_notifications))
        call = sql.publish_call(name, channel.wake_key(), channel.publish_flags(), events)
        return call + f"    {sql.RETURN_ROW}"


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
