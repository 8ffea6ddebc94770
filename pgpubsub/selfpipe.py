"""One wake-able wait: a self-pipe beside the file descriptors a loop waits on.

The worker, the supervisor and the ops HTTP server each block in
``select()`` with no timer while there is nothing to do, so an idle process
uses no CPU. A signal handler or another thread makes the wait return by
calling :meth:`Waker.wake`, which writes a byte to the pipe; writing to a
non-blocking pipe is safe from a signal handler.
"""

from __future__ import annotations

import contextlib
import os
import select
from collections.abc import Sequence


class Waker:
    """A self-pipe: :meth:`wake` makes a :meth:`wait` in progress (or the next one) return."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._read, False)
        os.set_blocking(self._write, False)

    def wake(self) -> None:
        """Make the wait return; safe in a signal handler and from any thread."""
        # A full pipe already wakes the waiter; a closed one has no waiter.
        with contextlib.suppress(OSError):
            os.write(self._write, b"\0")

    def wait(self, fds: Sequence[int] = (), timeout: float | None = None) -> list[int]:
        """Block until one of ``fds`` is readable, :meth:`wake` is called or ``timeout`` passes.

        Returns the readable descriptors among ``fds`` (empty after a wake-up
        or a timeout). Pending wake-ups are consumed.
        """
        readable, _, _ = select.select([*fds, self._read], [], [], timeout)
        if self._read in readable:
            self.drain()
            return [fd for fd in readable if fd != self._read]
        return readable

    def drain(self) -> None:
        """Consume the pending wake-ups."""
        with contextlib.suppress(BlockingIOError):
            while os.read(self._read, 512):
                pass

    def close(self) -> None:
        """Close both ends of the pipe (a later :meth:`wake` does nothing)."""
        for fd in (self._read, self._write):
            with contextlib.suppress(OSError):
                os.close(fd)
        # The numbers may be reused by files opened later: a late wake()
        # (a signal after the loop ended) must not write into one of them.
        self._read = self._write = -1
