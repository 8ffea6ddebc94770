"""End to end: when failed durable notifications are retried, and what runs again.

The probe channel's listeners append to a file (their database writes are
rolled back with the failure), so the tests count every call and its time.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

import pgpubsub
from pgpubsub.models import Notification
from tests.app.channels import RetryProbe
from tests.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def calls(path: Path, listener: str) -> list[float]:
    """The times at which ``listener`` ran, from the probe file."""
    if not path.exists():
        return []
    return [
        float(line.split()[2])
        for line in path.read_text().splitlines()
        if line.split()[0] == listener
    ]


def dead_letter_of(label: str) -> Notification | None:
    return Notification.objects.filter(state="dead", payload__kwargs__label=label).first()


@pytest.mark.parametrize("optimistic", ["1", "0"])
def test_a_notification_that_failed_once_is_retried_guarded(start_worker, tmp_path, optimistic):
    """A healthy listener beside a failing one runs once per attempt, plus the
    optimistic run of the first attempt, not twice per attempt."""
    probe_file = tmp_path / "probe.txt"
    worker = start_worker(
        extra_env={
            "PGPUBSUB_TEST_PROBE_FILE": str(probe_file),
            "PGPUBSUB_TEST_OPTIMISTIC": optimistic,
        }
    )
    pgpubsub.notify(RetryProbe, label="guarded")
    dead = wait_for(lambda: dead_letter_of("guarded"), what="the probe to be dead-lettered")
    assert dead.attempts == RetryProbe.max_attempts == 5
    failing = calls(probe_file, "failing")
    healthy = calls(probe_file, "healthy")
    # Optimistic: the first attempt runs the batch once unguarded and replays
    # it guarded; every later attempt runs guarded only.
    first_attempt_runs = 2 if optimistic == "1" else 1
    assert len(failing) == len(healthy) == RetryProbe.max_attempts - 1 + first_attempt_runs
    # The log line docs/worker.rst shows for a durable failure.
    assert re.search(
        r"\d ERRO \d+ pgpubsub: stored notification \d+ on channel tests\.app\.channels\."
        r"RetryProbe failed in tests\.app\.listeners\.probe_failing\n",
        worker.output,
    )


def test_retries_fire_when_due_whatever_the_poll_interval(start_worker, tmp_path):
    """With PGPUBSUB_RETRY_BACKOFF = 0.2 s the retries come 0.2, 0.4, 0.8 and
    1.6 s after each failure, although the worker sweeps every 1.5 s (a sweep
    between a failure and its retry used to forget the retry until the next
    sweep)."""
    probe_file = tmp_path / "probe.txt"
    backoff = 0.2
    start_worker(
        extra_env={
            "PGPUBSUB_TEST_PROBE_FILE": str(probe_file),
            "PGPUBSUB_TEST_OPTIMISTIC": "0",  # one call per attempt
            "PGPUBSUB_TEST_RETRY_BACKOFF": str(backoff),
            "PGPUBSUB_TEST_POLL_INTERVAL": "1.5",
        }
    )
    pgpubsub.notify(RetryProbe, label="on-time")
    wait_for(lambda: dead_letter_of("on-time"), what="the probe to be dead-lettered")
    attempts = calls(probe_file, "failing")
    assert len(attempts) == 5
    gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
    expected = [backoff * 2**n for n in range(4)]  # 1, 2, 4, 8 times the backoff
    for gap, due in zip(gaps, expected):
        assert due - 0.05 <= gap <= due + 0.4, f"retry gaps {gaps}, expected about {expected}"
