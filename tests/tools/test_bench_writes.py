"""Workload 8's limit with durable's document stores what the durable trigger stores."""

from __future__ import annotations

import subprocess
import sys

from pgpubsub.sql import stored_head
from tests.conftest import REPO


def test_the_document_limits_head_is_the_durable_triggers_head() -> None:
    # bench/writes.py is read in a child process: bench/'s module names
    # (harness, streams, ...) would shadow others in this session.
    head = subprocess.run(
        [sys.executable, "-c", "from writes import DURABLE_HEAD; print(DURABLE_HEAD)"],
        cwd=REPO / "bench",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    expected = stored_head("benchapp", "TimedDurableRow", "after_insert", "INSERT")
    assert f"'{head}'::jsonb" == expected
