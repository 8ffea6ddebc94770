"""The wake-up protocol between writers and readers (workers, subscription hubs).

A NOTIFY takes a lock at commit that every notifying transaction in the
database waits for in turn, so a writer that NOTIFYs on every commit
serialises with all the others. Here a writer NOTIFYs only when a reader of
the channel may be asleep; readers that are busy keep reading the table.
The SQL side (``migrations_templates/pgpubsub_v2.sql``) explains the
protocol; this module is the reader's side of it, without I/O:

* each channel has a lock key (:func:`wake_key`);
* a reader that has caught up asks to sleep on the keys of its channels
  (``pgpubsub_sleep_v2``); :class:`Sleep` remembers the answer: keys it now
  holds, keys another reader holds, keys writers hold;
* it reads once more, then waits on its LISTEN socket, unless writers held
  a key: then it reads again shortly (:class:`BusyPoll`);
* a NOTIFY on a channel whose key it holds makes it give the key back
  (:meth:`Sleep.woken`).

Why no event waits for the safety-net poll: a writer that looked at the key
before the reader took it still holds the key in shared mode, so the
reader cannot take it until that writer's transaction has ended and its
rows are visible to the reader's next read. A writer that looks after it
finds the key taken and NOTIFYs. Events that wait behind an older
transaction still running keep the reader reading (that transaction's
commit may wake nobody), and a reader that stops gives its keys back and
NOTIFYs its channels, which wakes those that relied on it. The one case
left to the poll is a holder that dies without a word (a killed process)
while other readers relied on it; readers that rely on another check again
every ``PGPUBSUB_POLL_INTERVAL`` seconds.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import sql

#: The first number of every pgpubsub advisory lock ('pgps').
LOCK_CLASS = sql.WAKE_LOCK_CLASS

_GENERATED = re.compile(r"pgpubsub_([0-9a-f]{5})")


def wake_key(db_name: str) -> int:
    """The wake-up lock key of a channel, from its database name.

    The names pgpubsub gives channels (``pgpubsub_`` and five hex digits)
    map one to one onto keys below 2**20; any other name (a custom
    trigger's) maps to a key at or above 2**30, so the two never meet.
    """
    match = _GENERATED.fullmatch(db_name)
    if match:
        return int(match.group(1), 16)
    return (zlib.crc32(db_name.encode()) & 0x3FFFFFFF) | 0x40000000


@dataclass
class Sleep:
    """What one reader connection holds in the protocol, by channel database name."""

    #: Channels whose key this connection holds; it must give each back when
    #: a NOTIFY on the channel arrives.
    held: set[str] = field(default_factory=set)
    #: Channels whose key another reader held at the last request.
    relying: set[str] = field(default_factory=set)

    def covers(self, names: Iterable[str]) -> bool:
        """Whether someone will wake this reader for every one of ``names``.

        A key given back on a NOTIFY is no longer covered: a reader must
        ask again before it sleeps, or later writers would not wake it.
        """
        return all(name in self.held or name in self.relying for name in names)

    def to_request(self, names: Iterable[str]) -> list[str]:
        """The channels to ask for (those whose key this connection does not hold)."""
        return [name for name in names if name not in self.held]

    def answered(self, asked: list[str], letters: str) -> list[str]:
        """Record the answer of ``pgpubsub_sleep_v2``; return the channels writers hold.

        An empty result means the reader may sleep once it has read again.
        """
        if len(letters) != len(asked):
            raise ValueError(f"expected {len(asked)} answers, got {letters!r}")
        busy = []
        for name, letter in zip(asked, letters):
            if letter == "h":
                self.held.add(name)
                self.relying.discard(name)
            elif letter == "r":
                self.relying.add(name)
            else:
                self.relying.discard(name)
                busy.append(name)
        return busy

    def woken(self, name: str) -> bool:
        """A NOTIFY on ``name`` arrived: whether this connection must give its key back."""
        self.relying.discard(name)
        if name in self.held:
            self.held.discard(name)
            return True
        return False

    def forget(self) -> None:
        """The connection is gone, and with it every key it held."""
        self.held.clear()
        self.relying.clear()


@dataclass
class BusyPoll:
    """Delays between reads while writers are in flight: short, doubling, capped."""

    first: float = 0.001
    maximum: float = 0.05
    _next: float = 0.0

    def next(self) -> float:
        delay = self._next or self.first
        self._next = min(self.maximum, delay * 2)
        return delay

    def reset(self) -> None:
        self._next = 0.0
