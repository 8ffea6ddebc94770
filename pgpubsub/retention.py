"""Retention cleanup of the event tables.

Events of a retained channel stay in the event log (``pgpubsub_event``) for
at least the channel's ``retention``; broadcast events stay in the broadcast
table for ``PGPUBSUB_BROADCAST_RETENTION`` seconds. Workers and
subscription hubs both clean up, each every :data:`TRIM_INTERVAL_SECONDS`,
one at a time (an advisory lock), in batches of :data:`TRIM_BATCH` rows per
short transaction, so cleanup never holds locks that writers wait for.

The log is cleaned channel by channel with the retention declared in the
code of the process that cleans: a channel no process knows any more keeps
its events until they are deleted by hand. Each channel's trim watermark
(``pgpubsub_event_trimmed``) records the last event deleted, so that a
subscription resuming from an earlier position is refused
(:class:`pgpubsub.CheckpointExpired`) rather than given a gap.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg

from . import conf, sql
from .channel import all_channel_classes
from .wakeups import LOCK_CLASS

#: Seconds between two cleanup rounds of one process.
TRIM_INTERVAL_SECONDS = 10.0

#: Rows deleted per statement (and transaction).
TRIM_BATCH = 1000

#: How long one round may go on deleting full batches.
TRIM_BUDGET_SECONDS = 0.5

#: The advisory lock key of cleanup (between the wake-up keys of generated
#: and of custom channel names, see pgpubsub.wakeups.wake_key).
TRIM_KEY = 2**29


def _steps() -> Iterator[tuple[str, dict[str, Any]]]:
    """The cleanup statements of one round, each deleting at most one batch."""
    for channel in all_channel_classes():
        if channel.retention is not None:
            yield (
                sql.TRIM_EVENTS,
                {
                    "channel": channel.listen_safe_name(),
                    "seconds": channel.retention.total_seconds(),
                    "limit": TRIM_BATCH,
                },
            )
    yield sql.TRIM_BROADCAST, {"seconds": conf.broadcast_retention(), "limit": TRIM_BATCH}


def trim(conn: psycopg.Connection[Any]) -> int:
    """One cleanup round on an autocommit connection; return how many events were deleted."""
    deleted = 0
    deadline = time.monotonic() + TRIM_BUDGET_SECONDS
    for query, params in _steps():
        while True:
            with conn.transaction():
                locked = conn.execute(sql.TRIM_LOCK, [LOCK_CLASS, TRIM_KEY]).fetchone()
                if not (locked and locked[0]):
                    return deleted
                row = conn.execute(query, params).fetchone()
                count = int(row[0]) if row else 0
            deleted += count
            if count < TRIM_BATCH or time.monotonic() > deadline:
                break
    return deleted


async def trim_async(conn: psycopg.AsyncConnection[Any]) -> int:
    """:func:`trim` on an async autocommit connection."""
    deleted = 0
    deadline = time.monotonic() + TRIM_BUDGET_SECONDS
    for query, params in _steps():
        while True:
            async with conn.transaction():
                row = await (await conn.execute(sql.TRIM_LOCK, [LOCK_CLASS, TRIM_KEY])).fetchone()
                if not (row and row[0]):
                    return deleted
                counted = await (await conn.execute(query, params)).fetchone()
                count = int(counted[0]) if counted else 0
            deleted += count
            if count < TRIM_BATCH or time.monotonic() > deadline:
                break
    return deleted
