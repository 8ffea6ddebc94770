"""A view of every channel as the database sees it (``manage.py pgpubsub status``).

:func:`collect` gathers, for one database:

* each channel with listeners: its dotted path, database name, mode
  (durable or broadcast), listeners, durable backlog (pending count and age
  of the oldest) and dead letters;
* each of its triggers and whether the database holds what the code would
  install — ``installed``, ``missing`` (not in the database), ``outdated``
  (the django-pgtrigger hash stored in the trigger's comment differs from
  the one the code compiles, or the installed function body differs from
  the compiled one) — and whether it is enabled;
* orphaned triggers: triggers in the database that publish through
  pgpubsub but that no code declares (a listener or channel was removed
  without a migration, or a trigger was created by hand);
* the worker LISTEN sessions connected (``pg_stat_activity``) and the
  server's ``pg_notification_queue_usage()``.

:func:`render` formats it as plain-text tables; :meth:`Status.as_json`
gives the same data for machines.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Sequence
from typing import Any

import pgtrigger
from django.db import ProgrammingError, transaction
from django.utils import timezone

from . import conf, sql
from .channel import BaseChannel, TriggerChannel, all_channel_classes, channel_names
from .connector import Query, SyncConnector, all_rows
from .outbox import backlog
from .probes import server_status, worker_application_name, worker_sessions
from .registry import listeners_for, registry

INSTALLED = "installed"
MISSING = "missing"
OUTDATED = "outdated"
#: The trigger's model is not migrated on this database (a router says so).
NOT_MANAGED = "not managed here"


@dataclasses.dataclass
class TriggerStatus:
    """One trigger a channel needs, compared with the database."""

    #: django-pgtrigger's name of the trigger (e.g. ``pgpubsub_1a2b3_after_insert``).
    name: str
    #: Its name in the database (``pgtrigger_<name>_<hash>``).
    pgid: str
    table: str
    #: e.g. ``"AFTER INSERT OR UPDATE"``.
    event: str
    #: ``installed``, ``missing``, ``outdated`` or ``not managed here``.
    state: str
    #: Whether the installed trigger is enabled (None when it is not installed).
    enabled: bool | None
    #: What differs, for an outdated trigger.
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.state in (INSTALLED, NOT_MANAGED) and self.enabled is not False


@dataclasses.dataclass
class ChannelStatus:
    """One channel: its code, its triggers and its stored notifications."""

    name: str
    db_name: str
    durable: bool
    #: ``app_label.ModelName`` of a trigger channel.
    model: str | None
    listeners: list[str]
    triggers: list[TriggerStatus]
    #: Stored notifications waiting (durable channels; None for broadcast ones).
    pending: int | None
    #: Seconds since the oldest pending notification was stored.
    oldest_pending_age: float | None
    dead_letters: int | None

    @property
    def mode(self) -> str:
        return "durable" if self.durable else "broadcast"


@dataclasses.dataclass
class OrphanedTrigger:
    """A trigger in the database that publishes through pgpubsub but that no code declares."""

    table: str
    pgid: str
    #: The database channel name it publishes on, when it could be read.
    db_channel: str | None
    #: The channel's dotted path, when the channel is known.
    channel: str | None
    enabled: bool


@dataclasses.dataclass
class Status:
    """Everything ``pgpubsub status`` reports about one database."""

    alias: str
    database: str
    server_version: str
    checked_at: datetime.datetime
    notify_queue_usage: float
    workers: list[dict[str, Any]]
    channels: list[ChannelStatus]
    orphaned_triggers: list[OrphanedTrigger]
    #: Stored notifications of channels this code does not know, by database name.
    unknown_backlog: dict[str, dict[str, Any]]
    #: pgpubsub's own tables are not in the database (``migrate`` has not run).
    tables_missing: bool = False

    def problems(self) -> list[str]:
        """The drift between code and database, one sentence each."""
        found: list[str] = []
        if self.tables_missing:
            found.append("pgpubsub's tables are missing from the database; run migrate")
        for channel in self.channels:
            for trigger in channel.triggers:
                if trigger.state in (MISSING, OUTDATED):
                    found.append(
                        f"trigger {trigger.name} of {channel.name} on {trigger.table} is "
                        f"{trigger.state}"
                        + (
                            f" ({trigger.detail}; run migrate (or makemigrations first))"
                            if trigger.detail
                            else ""
                        )
                    )
                elif trigger.enabled is False:
                    found.append(
                        f"trigger {trigger.name} of {channel.name} on {trigger.table} is disabled"
                    )
        for channel in self.channels:
            if not channel.durable and channel.pending:
                found.append(
                    f"{channel.name} is a broadcast channel with {channel.pending} stored "
                    "notification(s) pending, which no worker processes"
                )
        for orphan in self.orphaned_triggers:
            found.append(
                f"orphaned trigger {orphan.pgid} on {orphan.table} "
                f"(publishes on {orphan.channel or orphan.db_channel or 'an unknown channel'})"
            )
        return found

    def as_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict of the status."""
        data = dataclasses.asdict(self)
        for channel, raw in zip(self.channels, data["channels"]):
            raw["mode"] = channel.mode
        data["problems"] = self.problems()
        return _jsonable(data)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    return value


def _expected_body(install_sql: str, pgid: str) -> str | None:
    """The body django-pgtrigger gives the trigger's function (``prosrc``)."""
    start = install_sql.find(f"FUNCTION {pgid}()")
    if start < 0:
        return None
    open_quote = install_sql.find("$$", start)
    close_quote = install_sql.find("$$", open_quote + 2)
    if open_quote < 0 or close_quote < 0:
        return None
    return install_sql[open_quote + 2 : close_quote]


def _channel_triggers(
    channels: Sequence[type[BaseChannel]],
) -> dict[type[BaseChannel], list[tuple[Any, pgtrigger.Trigger]]]:
    """The registered (model, trigger) pairs each channel depends on."""
    by_pgid: dict[str, tuple[Any, pgtrigger.Trigger]] = {}
    for model, trigger in pgtrigger.registered():
        by_pgid[trigger.get_pgid(model)] = (model, trigger)
    result: dict[type[BaseChannel], list[tuple[Any, pgtrigger.Trigger]]] = {}
    for channel in channels:
        pairs: dict[str, tuple[Any, pgtrigger.Trigger]] = {}
        for listener in listeners_for(channel):
            for pgid in sorted(listener.triggers or ()):
                if pgid in by_pgid:
                    pairs[pgid] = by_pgid[pgid]
        # Triggers bound to the channel but no longer used by a listener.
        for pgid, (model, trigger) in by_pgid.items():
            if getattr(trigger, "channel", None) is channel:
                pairs.setdefault(pgid, (model, trigger))
        result[channel] = sorted(pairs.values(), key=lambda pair: pair[1].name or "")
    return result


def _event(trigger: pgtrigger.Trigger) -> str:
    return f"{trigger.when} {trigger.operation}"


def collect(using: str | None = None) -> Status:
    """Read the status of every channel in the database ``using``."""
    alias = using or conf.database_alias()
    # Channels with listeners, and those with retention, which publish to the
    # event log (and so have triggers) without any listener.
    retained = [channel for channel in all_channel_classes() if channel.retained()]
    channels = sorted({*registry, *retained}, key=lambda channel: channel.name())
    connector = SyncConnector(alias)
    database, version, usage = connector.run(server_status())
    # Statistics views are read once per transaction; inside a caller's
    # transaction they would show the sessions of its first read.
    connector.run(Query(sql.CLEAR_STATISTICS_SNAPSHOT))
    workers = connector.run(worker_sessions(worker_application_name(alias)))
    installed = {
        (relname, tgname): (schema, enabled, comment, source)
        for relname, schema, tgname, enabled, comment, source in connector.run(
            Query(sql.TRIGGERS, sql.TRIGGERS_PATTERNS, all_rows)
        )
    }
    try:
        with transaction.atomic(using=alias):
            stored = backlog(using=alias)
        tables_missing = False
    except ProgrammingError:  # pgpubsub's migrations have not run on this database
        stored, tables_missing = {}, True
    # The ORM's clock convention (aware or naive datetimes, per USE_TZ).
    now = timezone.now()

    expected: set[tuple[str, str]] = set()
    channel_statuses: list[ChannelStatus] = []
    triggers_of = _channel_triggers(channels)
    for channel in channels:
        trigger_statuses: list[TriggerStatus] = []
        for model, trigger in triggers_of[channel]:
            table = model._meta.db_table
            pgid = trigger.get_pgid(model)
            expected.add((table, pgid))
            trigger_statuses.append(
                _trigger_status(alias, model, trigger, installed.get((table, pgid)))
            )
        entry = stored.pop(channel.listen_safe_name(), None)
        durable = bool(channel.lock_notifications)
        pending = dead = None
        oldest_age = None
        # Without the tables there is no backlog to count: "-", not 0.
        if (durable or entry is not None) and not tables_missing:
            entry = entry or {"pending": 0, "dead": 0, "oldest_pending": None}
            pending, dead = entry["pending"], entry["dead"]
            if entry["oldest_pending"] is not None:
                oldest_age = max(0.0, (now - entry["oldest_pending"]).total_seconds())
        model_label = None
        if issubclass(channel, TriggerChannel):
            model_label = channel.get_model()._meta.label
        channel_statuses.append(
            ChannelStatus(
                name=channel.name(),
                db_name=channel.listen_safe_name(),
                durable=durable,
                model=model_label,
                listeners=[listener.name for listener in listeners_for(channel)],
                triggers=trigger_statuses,
                pending=pending,
                oldest_pending_age=oldest_age,
                dead_letters=dead,
            )
        )

    names = channel_names()
    orphans = [
        OrphanedTrigger(
            table=relname if schema == "public" else f"{schema}.{relname}",
            pgid=tgname,
            db_channel=sql.published_channel(source),
            channel=names.get(sql.published_channel(source) or ""),
            enabled=enabled,
        )
        for (relname, tgname), (schema, enabled, _comment, source) in sorted(installed.items())
        if (relname, tgname) not in expected and sql.published_channel(source) is not None
    ]
    unknown = {
        name: {**entry, "channel": names.get(name)} for name, entry in sorted(stored.items())
    }
    return Status(
        alias=alias,
        database=database,
        server_version=version,
        checked_at=now,
        notify_queue_usage=float(usage),
        workers=workers,
        channels=channel_statuses,
        orphaned_triggers=orphans,
        unknown_backlog=unknown,
        tables_missing=tables_missing,
    )


def _trigger_status(
    alias: str,
    model: Any,
    trigger: pgtrigger.Trigger,
    row: tuple[str, bool, str | None, str] | None,
) -> TriggerStatus:
    table = model._meta.db_table
    pgid = trigger.get_pgid(model)
    status = TriggerStatus(
        name=trigger.name or pgid,
        pgid=pgid,
        table=table,
        event=_event(trigger),
        state=INSTALLED,
        enabled=None,
    )
    if not trigger.allow_migrate(model, database=alias):
        status.state = NOT_MANAGED
        return status
    if row is None:
        status.state = MISSING
        return status
    _schema, enabled, comment, source = row
    status.enabled = enabled
    compiled = trigger.compile(model)
    differences = []
    if comment != compiled.hash:
        differences.append("its definition hash differs from the code's")
    if _expected_body(compiled.install_sql, pgid) != source:
        differences.append("its function body differs from the code's")
    if differences:
        status.state = OUTDATED
        status.detail = "; ".join(differences)
    return status


# -- rendering -------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], indent: str = "") -> str:
    """Plain-text columns, left-aligned, separated by two spaces."""
    text_rows = [[("-" if cell is None else str(cell)) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in text_rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row)]
    lines = []
    for row in [list(headers), *text_rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        lines.append(indent + "  ".join(cells).rstrip())
    return "\n".join(lines)


def format_age(seconds: float | None) -> str:
    """``"4.2s"``, ``"3m05s"``, ``"2h07m"``, ``"3d04h"``; ``"-"`` for None."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def _trigger_summary(channel: ChannelStatus) -> str:
    if not channel.triggers:
        return "-"
    good = sum(1 for trigger in channel.triggers if trigger.ok)
    if good == len(channel.triggers):
        return f"{good}/{len(channel.triggers)} ok"
    return f"{good}/{len(channel.triggers)} ok (DRIFT)"


def render(status: Status) -> str:
    """The status as plain-text tables."""
    out: list[str] = []
    pids = ", ".join(str(worker["pid"]) for worker in status.workers)
    out.append(
        f'pgpubsub status of database "{status.alias}" '
        f"({status.database}, PostgreSQL {status.server_version})"
    )
    out.append(
        f"Workers connected: {len(status.workers)}"
        + (f" (backend pids {pids})" if pids else "")
        + f"    NOTIFY queue usage: {status.notify_queue_usage:.2%}"
    )
    out.append("")
    out.append("Channels")
    out.append(
        format_table(
            ["CHANNEL", "DB NAME", "MODE", "LISTENERS", "BACKLOG", "OLDEST", "DEAD", "TRIGGERS"],
            [
                [
                    channel.name,
                    channel.db_name,
                    channel.mode,
                    len(channel.listeners),
                    channel.pending,
                    format_age(channel.oldest_pending_age),
                    channel.dead_letters,
                    _trigger_summary(channel),
                ]
                for channel in status.channels
            ],
            indent="  ",
        )
    )
    out.append("")
    out.append("Listeners")
    out.append(
        format_table(
            ["CHANNEL", "LISTENER"],
            [
                [channel.name if index == 0 else "", listener]
                for channel in status.channels
                for index, listener in enumerate(channel.listeners)
            ],
            indent="  ",
        )
    )
    rows = [
        [
            channel.name,
            trigger.table,
            trigger.name,
            trigger.event,
            trigger.state.upper() if trigger.state in (MISSING, OUTDATED) else trigger.state,
            {True: "yes", False: "NO", None: "-"}[trigger.enabled],
        ]
        for channel in status.channels
        for trigger in channel.triggers
    ]
    if rows:
        out.append("")
        out.append("Triggers")
        out.append(
            format_table(
                ["CHANNEL", "TABLE", "TRIGGER", "EVENT", "STATE", "ENABLED"], rows, indent="  "
            )
        )
    if status.orphaned_triggers:
        out.append("")
        out.append("Orphaned triggers (in the database, declared by no code)")
        out.append(
            format_table(
                ["TABLE", "TRIGGER", "PUBLISHES ON"],
                [
                    [orphan.table, orphan.pgid, orphan.channel or orphan.db_channel]
                    for orphan in status.orphaned_triggers
                ],
                indent="  ",
            )
        )
    if status.unknown_backlog:
        out.append("")
        out.append("Stored notifications of channels without listeners here")
        out.append(
            format_table(
                ["DB NAME", "CHANNEL", "PENDING", "DEAD"],
                [
                    [name, entry["channel"], entry["pending"], entry["dead"]]
                    for name, entry in status.unknown_backlog.items()
                ],
                indent="  ",
            )
        )
    problems = status.problems()
    out.append("")
    if problems:
        out.append(f"{len(problems)} problem(s) between code and database:")
        out.extend(f"  - {problem}" for problem in problems)
    else:
        out.append("Triggers match the code.")
    return "\n".join(out) + "\n"
