"""pgpubsub.contrib.reflex: two processes, a QuerySet.update() in one, both broadcasters told.

Needs reflex-django 4.x (Python 3.12+, Django 6.0+): run it with
``make test-django61``; elsewhere it is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.app.models import Author
from tests.conftest import db_url, wait_for

pytest.importorskip("reflex_django.live", reason="reflex-django 4.x is not installed")

pytestmark = pytest.mark.django_db(transaction=True)

SCRIPT = Path(__file__).with_name("reflex_process.py")


class Process:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "DATABASE_URL": db_url(), "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def changes(self) -> list[dict]:
        return [json.loads(line) for line in self.lines if line.startswith('{"model"')]

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_a_queryset_update_in_one_process_reaches_the_broadcasters_of_both():
    pks = [Author.objects.create(name=f"reflex-{n}", age=n).pk for n in range(3)]
    processes = [Process(), Process()]
    try:
        for process in processes:
            wait_for(
                lambda p=process: "ready" in p.lines or p.proc.poll() is not None,
                timeout=60,
                what="the bridge process to be ready",
            )
            assert "ready" in process.lines, "\n".join(process.lines)
        processes[0].send("update")
        expected = sorted(("app.author", "updated", pk) for pk in pks)
        for process in processes:
            wait_for(
                lambda p=process: len(p.changes()) >= 3 or p.proc.poll() is not None,
                timeout=30,
                what="three changes in each process",
            )
            got = sorted((c["model"], c["action"], c["pk"]) for c in process.changes())
            assert got == expected, "\n".join(process.lines)
        assert '{"updated": 3}' in processes[0].lines
        assert not any(line.startswith('{"updated"') for line in processes[1].lines)
    finally:
        for process in processes:
            process.stop()
