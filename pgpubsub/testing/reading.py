"""Reading the rows pgpubsub's tables gained since a start: what a test published.

A worker reads the event tables below the horizon (:mod:`pgpubsub.eventlog`):
rows of transactions that have all ended. A test's events are often rows of
its own transaction, which never commits (Django's ``TestCase``), or rows
that committed a moment ago beside it (``TransactionTestCase``). So
:class:`NewRows` reads "what was written since the last read", whoever
wrote it, with marks that each read returns for the next one (see the
``pgpubsub.testing`` section of :mod:`pgpubsub.sql`):

* a row of another transaction is new when that transaction was not visible
  in the snapshot of the last read: it has committed since;
* a row of the current transaction is new when its id is above the highest
  id the transaction had written at the last read (a session's ids only
  increase): its rows all carry the same transaction id, written before
  the last read or after it;
* an outbox row is new when its id is above the highest one read: the
  outbox has no transaction column. (A transaction that took its id before
  the start and commits after it is not seen; a test rarely has one.)

Each row is handed out once. The queries run on the Django connection
``using``, in the caller's transaction, so the rows of that transaction
are visible to them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from .. import sql
from ..channel import BaseChannel
from ..connector import Query, Row, SyncConnector
from ..eventlog import LogRow, tables
from ..positions import Position


class OutboxRow(NamedTuple):
    """One stored notification as read from the outbox."""

    id: int
    #: The channel's database name (or dotted path, for django-pgpubsub 1.3.1's rows).
    channel: str
    #: The event, JSON text (a stored event, :func:`pgpubsub.wire.decode_stored_event`).
    payload: str
    #: When it was written (seconds since the epoch).
    created_at: float


class Marks(NamedTuple):
    """Where the last read stopped (see the module's docstring)."""

    #: The snapshot it ran under (``pg_snapshot`` as text).
    snapshot: str
    #: The current transaction's id then, if it had one (``xid8`` as text).
    own: str | None
    #: The highest event-table id that transaction had written (0: none).
    own_last: int


def _first_marks(rows: list[Row]) -> tuple[Marks, int]:
    snapshot, own, own_last, outbox_last = rows[0]
    return Marks(snapshot, own, own_last), outbox_last


def _events(rows: list[Row]) -> tuple[Marks, list[LogRow]]:
    marks = Marks(*rows[0][:3])
    found = [
        LogRow(Position(int(xid), id_), channel, payload, created_at)
        for _, _, _, xid, id_, channel, payload, created_at in rows
        if xid is not None
    ]
    return marks, found


def _outbox(rows: list[Row]) -> list[OutboxRow]:
    return [OutboxRow(*row) for row in rows]


def _due(rows: list[Row]) -> dict[str, int]:
    return {channel: count for channel, count in rows}


class NewRows:
    """The rows written to pgpubsub's tables since it was built, each handed out once."""

    def __init__(self, using: str) -> None:
        self.connector = SyncConnector(using)
        self._marks, outbox_last = self.connector.run(Query(sql.TESTING_MARKS, None, _first_marks))
        #: The outbox's highest id when it was built: later notifications are above it.
        self.outbox_start: int = outbox_last
        self._outbox_last = outbox_last

    def events(self, channels: Iterable[type[BaseChannel]]) -> list[LogRow]:
        """The new event-table rows of ``channels``, in position order.

        Durable channels are left out: their events are read from the outbox
        (:meth:`outbox`), even those that are kept in the event log as well.
        """
        by_table = tables(channel for channel in channels if not channel.lock_notifications)
        if not by_table:
            return []
        params = {**self._marks._asdict(), **by_table}
        self._marks, rows = self.connector.run(
            Query(sql.testing_read_events(by_table), params, _events)
        )
        return rows

    def outbox(self, names: list[str]) -> list[OutboxRow]:
        """The new outbox rows of the channels named ``names`` (database names), in id order."""
        if not names:
            return []
        rows = self.connector.run(
            Query(sql.TESTING_READ_OUTBOX, [self._outbox_last, names], _outbox)
        )
        if rows:
            self._outbox_last = rows[-1].id
        return rows

    def due(self, names: list[str], after: int) -> dict[str, int]:
        """How many notifications of each channel with an id above ``after`` a claim takes now."""
        if not names:
            return {}
        return self.connector.run(Query(sql.TESTING_DUE, [after, names], _due))
