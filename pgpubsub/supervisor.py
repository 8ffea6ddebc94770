"""The ``listen --processes N`` supervisor.

It runs N worker processes (``listen --worker``), each in a numbered slot,
and replaces any that exits, after a delay that doubles each time the slot's
worker dies young (so a worker that cannot start does not spin the CPU).
On SIGTERM or SIGINT it asks every worker to stop (SIGTERM), waits up to the
shutdown timeout (``PGPUBSUB_SHUTDOWN_TIMEOUT``, ``listen --shutdown-timeout``)
for them to finish the notifications they hold, kills the ones still
running, and returns 0. A second SIGTERM or SIGINT during that wait kills
the remaining workers at once.

The supervisor starts the workers itself (no shell, no intermediate
process), so nothing waits on anything but the supervisor. Each worker is
started with a parent-death signal (Linux ``PR_SET_PDEATHSIG``): if the
supervisor is killed outright, every worker gets SIGTERM and stops too.

The supervisor never sleeps on a timer while all is well: it blocks on a
self-pipe that its SIGCHLD, SIGTERM and SIGINT handlers write to.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .backoff import Backoff
from .selfpipe import Waker

logger = logging.getLogger("pgpubsub")

_PR_SET_PDEATHSIG = 1

#: A worker command, or a function returning the command for a slot number.
Command = Sequence[str] | Callable[[int], Sequence[str]]


def _parent_death_signal(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` making the child receive SIGTERM when ``parent`` dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover
        return None

    def set_signal() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        # The parent may have died between fork() and prctl(); the signal
        # would then never come.
        if os.getppid() != parent:
            os._exit(0)

    return set_signal


def describe_exit(code: int) -> str:
    """``"exit status 3"`` or ``"signal SIGKILL"`` for a ``Popen.returncode``."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit status {code}"


class Supervisor:
    """Keeps ``processes`` worker processes running until SIGTERM or SIGINT.

    ``command`` is the worker's argv, or a function of the slot number
    (0 … processes-1) returning it, e.g. to give each worker its own port.
    A worker that exits is restarted in its slot after ``backoff_first``
    seconds, doubling for each further death up to ``backoff_max``; a worker
    that ran for ``stable_after`` seconds counts as healthy again. With
    ``restart=False`` exited workers are not replaced, and the supervisor
    returns 1 once none is left.
    """

    def __init__(
        self,
        command: Command,
        processes: int,
        *,
        restart: bool = True,
        shutdown_timeout: float = 30.0,
        backoff_first: float = 0.5,
        backoff_max: float = 30.0,
        stable_after: float = 60.0,
    ) -> None:
        if processes < 1:
            raise ValueError(f"a supervisor needs at least 1 process, got {processes}")
        self.command = command
        self.processes = processes
        self.restart = restart
        self.shutdown_timeout = shutdown_timeout
        self.backoff_first = backoff_first
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.stopping = False
        self.forced = False
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self._restart_at: dict[int, float] = {}
        self._backoffs: dict[int, Backoff] = {}
        self._started_at: dict[int, float] = {}
        self._waker: Waker | None = None

    # -- signals -------------------------------------------------------------

    def _wake(self, *_: Any) -> None:
        if self._waker is not None:
            self._waker.wake()

    def _on_stop(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.stopping:
            if not self.forced:
                logger.warning("pgpubsub: supervisor got %s again, killing workers", name)
            self.forced = True
        else:
            logger.info("pgpubsub: supervisor got %s, stopping workers", name)
        self.stopping = True
        self._wake()

    # -- children ------------------------------------------------------------

    def command_for(self, slot: int) -> list[str]:
        """The argv of the worker in ``slot``."""
        if callable(self.command):
            return list(self.command(slot))
        return list(self.command)

    def _spawn(self, slot: int) -> None:
        try:
            child = subprocess.Popen(
                self.command_for(slot), preexec_fn=_parent_death_signal(os.getpid())
            )
        except OSError as exc:
            logger.error("pgpubsub: could not start worker %d: %s", slot, exc)
            self._schedule_restart(slot, time.monotonic())
            return
        self.children[slot] = child
        self._started_at[slot] = time.monotonic()
        logger.info("pgpubsub: started worker %d (pid %d)", slot, child.pid)

    def _schedule_restart(self, slot: int, now: float) -> float:
        lived = now - self._started_at.get(slot, now)
        backoff = self._backoffs.get(slot)
        if backoff is None:
            backoff = self._backoffs[slot] = Backoff(self.backoff_first, self.backoff_max)
        if lived >= self.stable_after:
            backoff.reset()
        delay = backoff.next()
        self._restart_at[slot] = now + delay
        return delay

    def _reap_and_restart(self) -> None:
        now = time.monotonic()
        for slot, child in list(self.children.items()):
            code = child.poll()
            if code is None:
                continue
            del self.children[slot]
            if not self.restart:
                logger.error(
                    "pgpubsub: worker %d (pid %d) exited with %s; not restarting it",
                    slot,
                    child.pid,
                    describe_exit(code),
                )
                continue
            delay = self._schedule_restart(slot, now)
            logger.error(
                "pgpubsub: worker %d (pid %d) exited with %s; restarting in %.1fs",
                slot,
                child.pid,
                describe_exit(code),
                delay,
            )
        for slot, when in list(self._restart_at.items()):
            if when <= now:
                del self._restart_at[slot]
                self._spawn(slot)

    # -- main loop -----------------------------------------------------------

    def run(self) -> int:
        """Supervise until stopped; return the exit status for the command.

        Must be called from the main thread (it installs signal handlers,
        and restores the previous ones on return).
        """
        waker = self._waker = Waker()
        handlers = {
            signal.SIGTERM: signal.signal(signal.SIGTERM, self._on_stop),
            signal.SIGINT: signal.signal(signal.SIGINT, self._on_stop),
            signal.SIGCHLD: signal.signal(signal.SIGCHLD, self._wake),
        }
        try:
            for slot in range(self.processes):
                if not self.stopping:
                    self._spawn(slot)
            while not self.stopping:
                self._reap_and_restart()
                if not self.children and not self._restart_at:
                    logger.error("pgpubsub: every worker has exited; supervisor stopping")
                    return 1
                # SIGCHLD and the stop signals write to the pipe, so without
                # a pending restart there is nothing to wake up for.
                timeout = None
                if self._restart_at:
                    timeout = max(0.0, min(self._restart_at.values()) - time.monotonic())
                waker.wait(timeout=timeout)
            self._shutdown(waker)
            return 0
        finally:
            self._kill_all()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            waker.close()

    def _shutdown(self, waker: Waker) -> None:
        self._restart_at.clear()
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout
        while True:
            for slot, child in list(self.children.items()):
                if child.poll() is not None:
                    del self.children[slot]
            if not self.children:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.forced:
                for child in self.children.values():
                    logger.warning(
                        "pgpubsub: worker pid %d did not stop %s; killing it",
                        child.pid,
                        "in time" if remaining <= 0 else "yet",
                    )
                self._kill_all()
                return
            waker.wait(timeout=remaining)

    def _kill_all(self) -> None:
        """SIGKILL every worker still running and reap it (never leave one behind)."""
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                child.kill()
        for child in self.children.values():
            child.wait()
        self.children.clear()
