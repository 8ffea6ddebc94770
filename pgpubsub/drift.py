"""Drift between code and database, as advice: one sentence per problem and its fix.

:func:`pgpubsub.status.collect` finds the problems (missing, outdated,
disabled and orphaned triggers, stored notifications of a channel that is no
longer durable); this module words each one with the command that fixes it,
for the worker's start-up warnings and the ``pgpubsub.W002`` system check.

Which command fixes a trigger depends on the migration files, read from disk
and compared with the database's migration history:

* a migration that installs the trigger as the code declares it is not
  applied yet: ``migrate``;
* no migration installs it: ``makemigrations``, then ``migrate``;
* the migration is applied, yet the database differs (the trigger was
  dropped or edited by hand): django-pgtrigger's ``pgtrigger install``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import pgtrigger
from django.db import connections

from .channel import BaseChannel
from .connection import CONNECTION_ERRORS
from .status import (
    MISSING,
    OUTDATED,
    ChannelStatus,
    OrphanedTrigger,
    Status,
    TriggerStatus,
    collect,
)

logger = logging.getLogger("pgpubsub")

MIGRATE = "run `python manage.py migrate`"
MAKEMIGRATIONS = "run `python manage.py makemigrations`, then `python manage.py migrate`"


@dataclasses.dataclass(frozen=True)
class Drift:
    """One problem between code and database, worded with its fix."""

    message: str
    #: Applying the migrations not yet applied fixes it.
    fixed_by_migrate: bool


@dataclasses.dataclass
class MigrationFacts:
    """What the migration files say about triggers, and which of them are applied."""

    #: (app_label, model_name, trigger name) -> [(migration, trigger hash)] of AddTrigger.
    added: dict[tuple[str, str, str], list[tuple[tuple[str, str], str]]]
    #: trigger name -> migrations with a RemoveTrigger of it.
    removed: dict[str, list[tuple[str, str]]]
    applied: set[tuple[str, str]]

    @classmethod
    def read(cls, using: str) -> MigrationFacts | None:
        """The facts for the database ``using``; ``None`` when the migrations cannot be read."""
        from django.db.migrations.loader import MigrationLoader
        from pgtrigger.migrations import AddTrigger, RemoveTrigger

        try:
            loader = MigrationLoader(connections[using], ignore_no_migrations=True)
        except Exception:  # an unreadable project: advise without the migrations
            logger.debug("pgpubsub: cannot read the migrations", exc_info=True)
            return None
        added: dict[tuple[str, str, str], list[tuple[tuple[str, str], str]]] = {}
        removed: dict[str, list[tuple[str, str]]] = {}
        for key, migration in loader.disk_migrations.items():
            for operation in migration.operations:
                if isinstance(operation, AddTrigger):
                    trigger = operation.trigger
                    entry = (key[0], operation.model_name.lower(), str(trigger.name))
                    added.setdefault(entry, []).append((key, getattr(trigger, "hash", "")))
                elif isinstance(operation, RemoveTrigger):
                    removed.setdefault(operation.name, []).append(key)
        return cls(added=added, removed=removed, applied=set(loader.applied_migrations))

    def unapplied(self, keys: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        return [key for key in keys if key not in self.applied]


def _label(key: tuple[str, str]) -> str:
    return f"{key[0]}.{key[1]}"


def _trigger_fix(
    trigger: TriggerStatus, facts: MigrationFacts | None, code: dict[str, tuple[Any, Any]]
) -> tuple[str, bool]:
    """The fix of a missing or outdated trigger, and whether ``migrate`` is it."""
    if facts is None or trigger.pgid not in code:
        return MAKEMIGRATIONS, False
    model, declared = code[trigger.pgid]
    wanted = declared.compile(model).hash
    entry = (model._meta.app_label, model._meta.model_name, str(declared.name))
    installing = [key for key, hash_ in facts.added.get(entry, []) if hash_ == wanted]
    pending = facts.unapplied(installing)
    if pending:
        return f"{MIGRATE} (migration {_label(pending[-1])} installs it)", True
    if installing:
        return (
            f"its migration {_label(installing[-1])} is applied, so it was changed in the "
            "database by hand; run `python manage.py pgtrigger install "
            f"{declared.get_uri(model)}` to reinstall it",
            False,
        )
    return f"no migration installs it yet; {MAKEMIGRATIONS}", False


def _orphan_fix(orphan: OrphanedTrigger, facts: MigrationFacts | None) -> tuple[str, bool]:
    if not orphan.pgid.startswith("pgtrigger_"):
        return (
            "no migration manages it; if it is not wanted, drop it with "
            f"DROP TRIGGER {orphan.pgid} ON {orphan.table}",
            False,
        )
    # django-pgtrigger names it pgtrigger_<name>_<5 hex digits>.
    name = orphan.pgid[len("pgtrigger_") : -6]
    pending = facts.unapplied(facts.removed.get(name, [])) if facts else []
    if pending:
        return f"{MIGRATE} (migration {_label(pending[-1])} removes it)", True
    return (
        f"{MAKEMIGRATIONS} to remove it (or `python manage.py pgtrigger prune` if no "
        "migration of an installed app created it)",
        False,
    )


def _registered() -> dict[str, tuple[Any, Any]]:
    """pgid -> (model, trigger) of every trigger the code declares."""
    return {trigger.get_pgid(model): (model, trigger) for model, trigger in pgtrigger.registered()}


def find(
    status: Status,
    channels: Sequence[type[BaseChannel]] | None = None,
    facts: MigrationFacts | None = None,
) -> list[Drift]:
    """Each problem of ``status`` (of ``channels``, default all), worded with its fix.

    Pass ``facts`` (:meth:`MigrationFacts.read`) to name the exact command;
    without them a trigger's fix is ``makemigrations`` and ``migrate``.
    """
    names = None if channels is None else {channel.name() for channel in channels}
    found: list[Drift] = []
    if status.tables_missing:
        found.append(
            Drift(
                f"pgpubsub's tables are not in database {status.database!r}; {MIGRATE}",
                True,
            )
        )
    code = _registered()
    selected: list[ChannelStatus] = [
        channel for channel in status.channels if names is None or channel.name in names
    ]
    for channel in selected:
        for trigger in channel.triggers:
            where = f"trigger {trigger.name} of {channel.name} on table {trigger.table}"
            if trigger.state in (MISSING, OUTDATED):
                fix, by_migrate = _trigger_fix(trigger, facts, code)
                what = (
                    f"is missing, so {trigger.event} on {trigger.table} publishes nothing"
                    if trigger.state == MISSING
                    else f"is outdated ({trigger.detail})"
                )
                found.append(Drift(f"{where} {what}; {fix}", by_migrate))
            elif trigger.enabled is False:
                model, declared = code.get(trigger.pgid, (None, None))
                uri = declared.get_uri(model) if declared is not None else trigger.name
                found.append(
                    Drift(
                        f"{where} is disabled, so {trigger.event} on {trigger.table} publishes "
                        f"nothing; run `python manage.py pgtrigger enable {uri}`",
                        False,
                    )
                )
        if not channel.durable and channel.pending:
            found.append(
                Drift(
                    f"{channel.name} is a broadcast channel, yet {channel.pending} stored "
                    "notification(s) of it are pending in the outbox, which no worker reads "
                    "for a broadcast channel (stored while it had lock_notifications = True, "
                    "or by a trigger not migrated since). If its triggers are outdated, "
                    f"{MAKEMIGRATIONS}; to process the stored ones, set lock_notifications = "
                    "True again until `python manage.py pgpubsub status` shows no backlog for "
                    "it, or delete them",
                    False,
                )
            )
    for orphan in status.orphaned_triggers:
        fix, by_migrate = _orphan_fix(orphan, facts)
        publishes = orphan.channel or orphan.db_channel or "an unknown channel"
        found.append(
            Drift(
                f"orphaned trigger {orphan.pgid} on table {orphan.table} publishes on "
                f"{publishes}, but no code declares it; {fix}",
                by_migrate,
            )
        )
    return found


def needs_facts(status: Status) -> bool:
    """Whether wording ``status``'s problems needs the migration files."""
    return bool(status.orphaned_triggers) or any(
        trigger.state in (MISSING, OUTDATED)
        for channel in status.channels
        for trigger in channel.triggers
    )


def log_warnings(using: str, channels: Sequence[type[BaseChannel]]) -> None:
    """Log one WARNING per problem of ``channels`` (and per orphaned trigger) in ``using``.

    The worker's start-up hook, run after every (re)connection. A failure to
    read the status is logged, never raised, except a lost connection, which
    the worker handles.
    """
    try:
        report = collect(using)
        facts = MigrationFacts.read(using) if needs_facts(report) else None
        problems = find(report, channels, facts)
    except CONNECTION_ERRORS:
        raise
    except Exception:
        logger.warning("pgpubsub: could not compare the triggers with the code", exc_info=True)
        return
    for problem in problems:
        logger.warning("pgpubsub: %s", problem.message)
