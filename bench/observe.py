"""Watching a process under test from the harness: database connections, CPU, memory, threads."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import psycopg
from harness import CLOCK_TICKS, Impl, rss_bytes

#: application_names that are not the process under test (see livetool.PRODUCER_APP).
NOT_UNDER_TEST = ("bench-producer", "bench-harness")

_CONNECTIONS = """
SELECT coalesce(application_name, ''), count(*)
FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend'
  AND pid <> pg_backend_pid() AND NOT (coalesce(application_name, '') = ANY(%s))
GROUP BY 1
"""


class ConnectionSampler:
    """Counts, in a thread, the client connections to ``impl``'s database but the harness's own.

    The process under test is the only other client of that database while
    it runs (the producer's connection is left out by its
    ``application_name``), so the largest count seen is the number of
    connections that process holds. ``by_name`` is the count per
    ``application_name`` when the largest total was seen; the subscription
    hub's connection is named ``pgpubsub-hub``.
    """

    def __init__(self, impl: Impl, interval: float = 0.2) -> None:
        self.impl = impl
        self.interval = interval
        self.most = 0
        self.by_name: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with (
            contextlib.suppress(psycopg.Error),
            psycopg.Connection.connect(
                self.impl.db_url, autocommit=True, application_name="bench-harness"
            ) as conn,
        ):
            while not self._stop.is_set():
                rows = conn.execute(_CONNECTIONS, [list(NOT_UNDER_TEST)]).fetchall()
                total = sum(count for _, count in rows)
                if total >= self.most:
                    self.most = total
                    self.by_name = dict(rows)
                self._stop.wait(self.interval)

    def __enter__(self) -> ConnectionSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        return {
            "connections": self.most,
            "hub_connections": self.by_name.get("pgpubsub-hub", 0),
            "connections_by_name": self.by_name,
        }


def process_stat(pid: int) -> tuple[float, int]:
    """(CPU seconds, threads) of ``pid`` from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, int(fields[17])


class ProcessWatch:
    """CPU seconds between :meth:`start` and :meth:`stop`, peak RSS and threads meanwhile."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.pid = pid
        self.interval = interval
        self.cpu0 = self.cpu1 = 0.0
        self.wall0 = self.wall1 = 0.0
        self.rss_peak = 0
        self.threads_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.rss_peak = max(self.rss_peak, rss_bytes(self.pid))
            self.threads_peak = max(self.threads_peak, process_stat(self.pid)[1])

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def start(self) -> ProcessWatch:
        self.cpu0 = process_stat(self.pid)[0]
        self.wall0 = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> ProcessWatch:
        with contextlib.suppress(OSError, ValueError):
            self.cpu1 = process_stat(self.pid)[0]
        self.wall1 = time.monotonic()
        self._stop.set()
        self._thread.join()
        self._sample()
        return self

    @property
    def cpu_pct(self) -> float | None:
        wall = self.wall1 - self.wall0
        return 100 * (self.cpu1 - self.cpu0) / wall if wall > 0 and self.cpu1 else None
