"""Reading the event tables by position, as queries any connector runs.

The event log (``pgpubsub_event``, retained channels) and the broadcast
table (``pgpubsub_broadcast``, broadcast channels) are read the same way by
workers and subscription hubs: the next events of some channels after a
position, below the horizon, in position order (:mod:`pgpubsub.positions`
explains why that order never skips a transaction that commits late). The
queries here do no I/O; :class:`pgpubsub.connector.SyncConnector`,
:class:`~pgpubsub.connector.AsyncConnector` or
:func:`~pgpubsub.connector.execute` run them. The reader's side of the
wake-up protocol (taking and giving back keys) is here too, as queries.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from . import sql
from .channel import BaseChannel
from .connector import Query, Row, first_row, no_result
from .positions import Position, database_tag
from .wakeups import LOCK_CLASS, wake_key

#: Events read per statement.
READ_BATCH = 1000


class LogRow(NamedTuple):
    """One event as read from an event table."""

    position: Position
    #: The channel's database name.
    channel: str
    #: The event object, JSON text (:class:`pgpubsub.wire.Event`).
    payload: str
    #: When it was written (seconds since the epoch).
    created_at: float


class LogRead(NamedTuple):
    """What one read returned: the events, and where the reader stands after them."""

    rows: list[LogRow]
    #: Every event below the horizon of this read has been read...
    caught_up: bool
    #: ...and this is the position after everything read.
    position: Position
    #: Committed events of the channels wait at or above the horizon (a
    #: transaction older than theirs is still running): read again shortly.
    beyond: bool


def event_table(channel: type[BaseChannel]) -> str:
    """The table a channel's events are read from (durable channels: the outbox, not here)."""
    return sql.EVENT_LOG if channel.retained() else sql.BROADCAST_TABLE


def tables(channels: Iterable[type[BaseChannel]]) -> dict[str, list[str]]:
    """Channel database names by the event table they are read from."""
    found: dict[str, list[str]] = {}
    for channel in channels:
        found.setdefault(event_table(channel), []).append(channel.listen_safe_name())
    return found


def read(
    by_table: dict[str, list[str]], after: Position, limit: int = READ_BATCH
) -> Query[LogRead]:
    """The next events after ``after`` of the channels of ``by_table``, in position order."""

    def parse(rows: list[Row]) -> LogRead:
        horizon, beyond = int(rows[0][0]), bool(rows[0][1])
        events = [
            LogRow(Position(int(xid), id_), channel, payload, created_at)
            for _, _, xid, id_, channel, payload, created_at in rows
            if xid is not None
        ]
        caught_up = len(events) < limit
        position = events[-1].position if events else after
        if caught_up:
            # Every event of these channels below the horizon has been read.
            position = max(position, Position.before_transaction(horizon))
        return LogRead(events, caught_up, position, beyond)

    params: dict[str, Any] = {"xid": str(after.xid), "id": after.id, "limit": limit, **by_table}
    return Query(sql.read_events(by_table), params, parse)


class Checkpoint(NamedTuple):
    """The current position, and the tag of the database it belongs to."""

    position: Position
    tag: str


def checkpoint() -> Query[Checkpoint]:
    """The position before every event not yet handed out, and the database's tag."""

    def parse(rows: list[Row]) -> Checkpoint:
        horizon, oid, name = rows[0]
        return Checkpoint(Position.before_transaction(int(horizon)), database_tag(oid, name))

    return Query(sql.CHECKPOINT, None, parse)


def trimmed(names: list[str]) -> Query[dict[str, Position]]:
    """How far retention cleanup has deleted each of these channels' events."""

    def parse(rows: list[Row]) -> dict[str, Position]:
        return {name: Position(int(xid), id_) for name, xid, id_ in rows}

    return Query(sql.TRIMMED, [names], parse)


def ask_to_sleep(keys: list[int]) -> Query[str]:
    """A reader that has caught up asks for its channels' keys (one letter per key)."""

    def parse(rows: list[Row]) -> str:
        row = first_row(rows)
        return str(row[0]) if row else ""

    return Query(sql.SLEEP, [keys], parse)


def give_back(keys: list[int]) -> Query[None]:
    """A reader gives keys back after a NOTIFY on their channels reached it."""
    return Query(sql.WAKE, [LOCK_CLASS, keys], no_result)


def hand_over(names: list[str]) -> Query[None]:
    """A reader that stops gives back the keys of these channels and wakes their other readers.

    Without it, a reader that relied on this one would sleep until its
    next safety-net poll.
    """
    keys = [wake_key(name) for name in names]
    return Query(sql.HAND_OVER, [LOCK_CLASS, keys, names], no_result)
