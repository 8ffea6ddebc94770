"""Positions in an event table, and the event ids that carry them.

Rows of the event log (``pgpubsub_event``) and of the broadcast table
(``pgpubsub_broadcast``) are ordered by ``(xid, id)``: the 64-bit id of the
transaction that wrote the row, then a sequence number. A reader hands out
only rows whose transaction id is below the *horizon*, the oldest
transaction still running anywhere on the server
(``pg_snapshot_xmin(pg_current_snapshot())``). Every transaction below it
has ended, so no row can appear later behind a position already handed
out: a transaction that started first but commits last is handed out when
it commits, and a reader resuming after an event never skips it.

A :class:`Position` ``p`` means "every row at or before ``p`` has been
handed out". The id of an event is the position just after it, encoded as
an opaque string with a tag of the database, so a position from another
database is refused rather than misread.
"""

from __future__ import annotations

import re
import zlib
from typing import NamedTuple

from .exceptions import InvalidCheckpoint

#: Larger than any sequence number: ``Position(x, LAST)`` is "all of x".
LAST = 2**63 - 1

_ENCODED = re.compile(r"^(\d{1,20})\.(\d{1,19})\.([0-9a-f]{4})$")


class Position(NamedTuple):
    """A place in an event table, compared as ``(xid, id)``."""

    xid: int
    id: int

    @classmethod
    def before_transaction(cls, xid: int) -> Position:
        """The position just before every row of transaction ``xid`` and later ones."""
        return cls(xid - 1, LAST)

    def encode(self, tag: str) -> str:
        """The event id string for this position in the database tagged ``tag``."""
        return f"{self.xid}.{self.id}.{tag}"

    @classmethod
    def decode(cls, text: object, tag: str) -> Position:
        """Read an event id made by :meth:`encode` for the database tagged ``tag``.

        Raises :class:`pgpubsub.InvalidCheckpoint` saying what is wrong with it.
        """
        if not isinstance(text, str):
            raise InvalidCheckpoint(text, "a checkpoint is the string of an event id")
        match = _ENCODED.match(text)
        if match is None:
            raise InvalidCheckpoint(
                text, "not an event id (expected '<xid>.<id>.<tag>' as given in event.id)"
            )
        xid, id_, found = match.groups()
        if found != tag:
            raise InvalidCheckpoint(
                text, "it belongs to another database (its tag does not match this one's)"
            )
        if int(id_) > LAST:
            raise InvalidCheckpoint(text, "its sequence number is out of range")
        return cls(int(xid), int(id_))


def database_tag(database_oid: int, database_name: str) -> str:
    """A short tag of a database, carried in event ids (4 hex digits)."""
    return f"{zlib.crc32(f'{database_oid}:{database_name}'.encode()) & 0xFFFF:04x}"
