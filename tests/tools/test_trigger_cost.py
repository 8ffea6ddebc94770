"""bench/trigger_cost.py --loop: each trigger variant's server CPU per transaction."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import psycopg

from tests.conftest import REPO


def trigger_cost(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``bench/trigger_cost.py ARGS`` against the suite's server."""
    return subprocess.run(
        [sys.executable, str(REPO / "bench" / "trigger_cost.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_loop_prices_every_variant_asked_for_and_drops_its_database() -> None:
    variants = ["durable", "durable_previous", "retained_previous"]
    done = trigger_cost("--loop", "200", "--rounds", "1", "--variants", ",".join(variants))
    assert done.returncode == 0, done.stderr[-2000:]
    # Each variant's figure, the reference's included; a trigger that wrote
    # no event would have stopped the script (it checks the event tables).
    for name in ["none", *variants]:
        assert re.search(rf"^\s+{name}\s+\d+\.\d us\s+\(", done.stdout, re.MULTILINE), done.stdout
    with psycopg.connect(os.environ["DATABASE_URL"]) as conn:
        left = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = 'bench_trigger_cost'"
        ).fetchone()
    assert left is None


def test_an_unknown_variant_is_named_with_the_known_ones() -> None:
    done = trigger_cost("--loop", "10", "--variants", "durable,no_such_variant", timeout=60)
    assert done.returncode != 0
    assert "no_such_variant" in done.stderr and "durable_previous" in done.stderr


def test_waits_names_what_the_writers_wait_on_under_each_variant() -> None:
    done = trigger_cost(
        *("--writers", "4", "--rounds", "1", "--seconds", "3", "--waits"),
        *("--variants", "broadcast"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    for name in ("none", "broadcast"):
        [at] = [i for i, line in enumerate(lines) if re.match(rf"\s+{name}\s+\d+ tx/s", line)]
        # The next line: mean sessions per wait event, e.g. "1.2 LWLock:WALWrite".
        assert re.match(r"\s+sessions: \d+\.\d ", lines[at + 1]), done.stdout


def test_wal_counts_each_variants_bytes_and_its_consumers() -> None:
    done = trigger_cost("--wal", "300", "--variants", "floor_log_keyed,durable,retained")
    assert done.returncode == 0, done.stderr[-2000:]
    written = {}
    for name in ("none", "floor_log_keyed", "durable", "retained"):
        match = re.search(rf"^\s+{name}\s+(\d+) B\s+\(", done.stdout, re.MULTILINE)
        assert match, done.stdout
        written[name] = int(match.group(1))
    # Each trigger logs its event on top of the row: the durable event, in
    # 1.3.1's jsonb shape, most of all.
    assert written["none"] < written["floor_log_keyed"] < written["retained"] < written["durable"]
    # The outbox's events are claimed by deleting them, the event log's are read.
    consumers = dict(re.findall(r"^\s+(\w+) .*consumer (\d+) B/event", done.stdout, re.MULTILINE))
    assert set(consumers) == {"floor_log_keyed", "durable"}, done.stdout
    assert "Heap/INSERT" in done.stdout
