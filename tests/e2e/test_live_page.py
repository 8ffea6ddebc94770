"""The example's live authors page in a real browser (headless Chromium), served by uvicorn.

The page is rendered from the database, then follows the event stream of
``pgpubsub.sse.EventStreamView``. Rows change from other processes
(``example/change_authors.py``: inserts, ``QuerySet.update()``, raw SQL,
deletes) and the DOM must follow; the server is stopped mid-stream, rows
change while it is down, and once it is back the page must have caught up
with nothing lost and no reset.

Needs Debian's ``chromium`` (``apt-get install chromium``; CI installs it)
and Playwright's Python package, which drives it through
``executable_path``: no browser is downloaded.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import django
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from tests.conftest import REPO, wait_for

if django.VERSION < (5, 0):
    pytest.skip("pgpubsub.sse needs Django 5.0 or newer", allow_module_level=True)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

EXAMPLE = REPO / "example"
CHROMIUM = os.environ.get("PGPUBSUB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
#: Set to a path (docs/_static/live-authors.png) to keep a screenshot of the page there.
SCREENSHOT = os.environ.get("PGPUBSUB_SCREENSHOT")

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
    pytest.skip(
        f"no Chromium at {CHROMIUM} (apt-get install chromium, or set PGPUBSUB_CHROMIUM)",
        allow_module_level=True,
    )


@pytest.fixture
def example_database() -> Iterator[str]:
    """A fresh database with the example project migrated into it; its URL."""
    server = os.environ["DATABASE_URL"]
    name = f"pgpubsub_live_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = make_conninfo(server, dbname=name)
    try:
        subprocess.run(
            [sys.executable, str(EXAMPLE / "manage.py"), "migrate", "--verbosity", "0"],
            env=example_env(url),
            check=True,
            timeout=120,
        )
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def example_env(database_url: str) -> dict[str, str]:
    """The environment of the example project's processes (not the test project's settings)."""
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "DJANGO_SETTINGS_MODULE": "bookstore.settings",
        "PYTHONUNBUFFERED": "1",
    }


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """``uvicorn bookstore.asgi:application`` as a subprocess, as ``make live`` runs it."""

    def __init__(self, database_url: str, port: int, log: Path) -> None:
        self.env = example_env(database_url)
        self.port = port
        self.url = f"http://127.0.0.1:{port}/"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "bookstore.asgi:application",
                    "--app-dir",
                    str(EXAMPLE),
                    "--port",
                    str(self.port),
                    "--timeout-graceful-shutdown",
                    "1",
                    "--lifespan",
                    "off",
                ],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for(self._answers, timeout=30, what=f"uvicorn to answer on {self.url}")

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"uvicorn exited:\n{self.log.read_text()}")
        try:
            with urllib.request.urlopen(self.url + "authors.json", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


def change(database_url: str, *args: str) -> None:
    """Change authors from another process (example/change_authors.py)."""
    subprocess.run(
        [sys.executable, str(EXAMPLE / "change_authors.py"), *args],
        env=example_env(database_url),
        check=True,
        timeout=60,
        capture_output=True,
    )


def rows(database_url: str) -> list[list[Any]]:
    with psycopg.connect(database_url) as conn:
        found = conn.execute("SELECT id, name FROM library_author ORDER BY id").fetchall()
    return [list(row) for row in found]


def test_the_live_page_follows_other_processes_and_catches_up_after_a_restart(
    example_database: str, tmp_path: Path
) -> None:
    url = example_database
    change(url, "create", "Ada", "Grace")
    server = Server(url, _free_port(), tmp_path / "uvicorn.log")
    server.start()
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 900, "height": 640})

            def dom() -> list[list[Any]]:
                return page.eval_on_selector_all(
                    "#authors li",
                    "items => items.map(li => [Number(li.dataset.pk), li.textContent])",
                )

            def shows(expected: list[list[Any]], what: str) -> None:
                try:
                    wait_for(lambda: dom() == expected, timeout=20, what=what)
                except AssertionError:
                    message = f"{what}: the page shows {dom()}, not {expected}"
                    raise AssertionError(message) from None

            page.goto(server.url)
            page.wait_for_selector("body[data-stream=open]", timeout=20_000)
            shows(rows(url), "the rendered rows")

            # Changes from other processes, live.
            change(url, "create", "Edsger")
            shows(rows(url), "an insert")
            change(url, "rename", "Ada", "Ada Lovelace")  # QuerySet.update()
            shows(rows(url), "a QuerySet.update()")
            raw_update = "UPDATE library_author SET name = name || ' (raw)' WHERE name = 'Grace'"
            change(url, "sql", raw_update)
            shows(rows(url), "a raw SQL update")
            change(url, "delete", "Edsger")
            shows(rows(url), "a delete")
            received_before = len(page.evaluate("window.received"))

            # The server goes away mid-stream; rows change while it is down.
            server.stop()
            page.wait_for_selector("body[data-stream=reconnecting]", timeout=20_000)
            change(url, "create", "Barbara", "Donald")
            change(url, "suffix", "!")  # every row, one statement
            change(url, "sql", "DELETE FROM library_author WHERE name = 'Donald!'")
            change(url, "rename", "Barbara!", "Barbara Liskov")
            expected = rows(url)
            assert [name for _, name in expected] == [
                "Ada Lovelace!",
                "Grace (raw)!",
                "Barbara Liskov",
            ]

            server.start()
            page.wait_for_selector("body[data-stream=open]", timeout=30_000)
            shows(expected, "the rows changed while the server was down")
            # Caught up by resuming from its last event id, not by reloading.
            assert page.get_attribute("body", "data-resets") == "0"
            # Every event once, in order: 2 inserts, 4 rows updated by one
            # statement, 1 raw delete, 1 rename.
            received = page.evaluate("window.received")
            positions = [tuple(int(part) for part in id_.split(".")[:2]) for id_ in received]
            assert positions == sorted(set(positions)), received
            assert len(received) == received_before + 8, received
            page.screenshot(path=str(tmp_path / "live-authors.png"))
            if SCREENSHOT:
                change(url, "create", "Frances")
                shows(rows(url), "one more insert, for the screenshot")
                page.screenshot(path=SCREENSHOT)
        finally:
            browser.close()
            server.stop()
    log = (tmp_path / "uvicorn.log").read_text()
    assert "Traceback" not in log, log
