"""The ``listen --processes N`` supervisor.

It runs N worker processes (``listen --worker``), replaces any that dies
(with a growing delay if one keeps dying) and, on SIGTERM or SIGINT, asks
every worker to stop, waits up to ``PGPUBSUB_SHUTDOWN_TIMEOUT`` seconds for
them to finish their work, kills the ones still running, and returns 0.
Workers are started with a parent-death signal, so none outlives a
supervisor that is killed outright.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger("pgpubsub")

_PR_SET_PDEATHSIG = 1


def _parent_death_signal() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover
        return None

    def set_signal() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return set_signal


class Supervisor:
    """Keeps ``processes`` copies of a worker command running."""

    def __init__(
        self,
        command: Sequence[str],
        processes: int,
        *,
        restart: bool = True,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.command = list(command)
        self.processes = processes
        self.restart = restart
        self.shutdown_timeout = shutdown_timeout
        self.stopping = False
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self._restart_at: dict[int, float] = {}
        self._failures: dict[int, int] = {}
        self._started_at: dict[int, float] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    def _wake(self, *_: Any) -> None:
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"\0")

    def _on_stop(self, signum: int, _frame: Any) -> None:
        if not self.stopping:
            logger.info("pgpubsub: supervisor got %s, stopping workers", signal.Signals(signum).name)
        self.stopping = True
        self._wake()

    def _spawn(self, slot: int) -> None:
        child = subprocess.Popen(self.command, preexec_fn=_parent_death_signal())  # noqa: PLW1509
        self.children[slot] = child
        self._started_at[slot] = time.monotonic()
        logger.info("pgpubsub: started worker %d (pid %d)", slot, child.pid)

    def run(self) -> int:
        """Supervise until stopped; return the exit status for the command."""
        handlers = {
            signal.SIGTERM: signal.signal(signal.SIGTERM, self._on_stop),
            signal.SIGINT: signal.signal(signal.SIGINT, self._on_stop),
            signal.SIGCHLD: signal.signal(signal.SIGCHLD, self._wake),
        }
        try:
            for slot in range(self.processes):
                self._spawn(slot)
            while not self.stopping:
                self._reap_and_restart()
                if not self.children and not self._restart_at:
                    logger.error("pgpubsub: every worker has exited; supervisor stopping")
                    return 1
                timeout = 1.0
                if self._restart_at:
                    timeout = max(0.0, min(self._restart_at.values()) - time.monotonic())
                select.select([self._wake_r], [], [], timeout)
                with contextlib.suppress(BlockingIOError):
                    while os.read(self._wake_r, 512):
                        pass
            self._shutdown()
            return 0
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _reap_and_restart(self) -> None:
        now = time.monotonic()
        for slot, child in list(self.children.items()):
            code = child.poll()
            if code is None:
                continue
            del self.children[slot]
            lived = now - self._started_at.get(slot, now)
            if lived > 60:
                self._failures[slot] = 0
            self._failures[slot] = self._failures.get(slot, 0) + 1
            if not self.restart:
                logger.error("pgpubsub: worker %d (pid %d) exited with %s", slot, child.pid, code)
                continue
            delay = min(30.0, 0.5 * 2 ** (self._failures[slot] - 1))
            logger.error(
                "pgpubsub: worker %d (pid %d) exited with %s; restarting in %.1fs",
                slot,
                child.pid,
                code,
                delay,
            )
            self._restart_at[slot] = now + delay
        for slot, when in list(self._restart_at.items()):
            if when <= now:
                del self._restart_at[slot]
                self._spawn(slot)

    def _shutdown(self) -> None:
        for child in self.children.values():
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout
        for child in self.children.values():
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("pgpubsub: worker pid %d did not stop in time; killing", child.pid)
                child.kill()
                child.wait()
        self.children.clear()
