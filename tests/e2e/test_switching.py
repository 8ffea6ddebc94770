"""Switching a database from django-pgpubsub 1.3.1 to pgpubsub and back, with 1.3.1 itself.

The project in ``tests/switching`` runs on either library. django-pgpubsub
1.3.1 runs from the benchmark's cached virtualenv (``bench/.venvs``, created
from PyPI on first use), pgpubsub from this repository; each step is a
``django-admin`` command in one of the two, against a database of its own.
The steps are the ones docs/migrating.rst gives.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PROJECT = REPO / "tests" / "switching"
DATABASE = "pgpubsub_switching"
DRAIN = (
    "from unittest import mock; from pgpubsub.listen import listen\n"
    "with mock.patch('pgpubsub.listen.POLL', False): listen(recover=True)"
)


def theirs_python() -> str:
    """The interpreter of a virtualenv with django-pgpubsub 1.3.1 (bench/harness.py's)."""
    spec = importlib.util.spec_from_file_location("bench_harness", REPO / "bench" / "harness.py")
    assert spec and spec.loader
    harness = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = harness  # its dataclasses look their module up
    spec.loader.exec_module(harness)
    return str(harness.ensure_theirs_venv(print))


class Project:
    """``django-admin`` for tests/switching with one library or the other."""

    def __init__(self, work: Path, url: str, pythons: dict[str, str]) -> None:
        self.work = work
        self.url = url
        self.pythons = pythons
        self.migrations = work / "shop_migrations"
        self.migrations.mkdir()
        (self.migrations / "__init__.py").touch()

    def run(self, library: str, *args: str) -> str:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "switch_settings",
            "PYTHONPATH": str(PROJECT),
            "SWITCH_DATABASE_URL": self.url,
            "SWITCH_WORK_DIR": str(self.work),
        }
        # Run outside the repository, whose pgpubsub/ would shadow 1.3.1's.
        done = subprocess.run(
            [self.pythons[library], "-m", "django", *args],
            env=env,
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if done.returncode:
            raise AssertionError(
                f"{library}: django-admin {' '.join(args)} failed ({done.returncode}):\n"
                f"{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def shell(self, library: str, code: str) -> str:
        return self.run(library, "shell", "-c", code)

    def query(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(statement, params).fetchall()

    def deliveries(self) -> list[tuple[str, str]]:
        return sorted(self.query("SELECT listener, ref FROM shop_delivery"))

    def write(self, library: str, ref: str) -> None:
        """A row on the durable trigger channel and a durable notify(), as a web process would."""
        self.shell(
            library,
            "import pgpubsub; from shop.models import Order; "
            f"Order.objects.create(ref={ref!r}); "
            f"pgpubsub.notify('shop.channels.Shipped', ref={ref!r})",
        )


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    server = os.environ["DATABASE_URL"]
    pythons = {"1.3.1": theirs_python(), "pgpubsub": sys.executable}
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    yield Project(tmp_path, make_conninfo(server, dbname=DATABASE), pythons)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DATABASE))
        )


def test_switch_with_1_3_1_still_writing_then_roll_back(project: Project) -> None:
    # On 1.3.1: its migrations, its triggers, two notifications left pending.
    project.run("1.3.1", "makemigrations", "shop")
    project.run("1.3.1", "migrate")
    project.write("1.3.1", "before")
    assert project.query("SELECT count(*) FROM pgpubsub_notification") == [(2,)]

    # The switch: the app's new migration is made once, in development.
    project.run("pgpubsub", "makemigrations", "shop", "--name", "switch_to_pgpubsub")
    switch = project.migrations / "0002_switch_to_pgpubsub.py"
    assert switch.exists()
    project.run("pgpubsub", "migrate")

    # A process still running 1.3.1's code during the rolling deploy can
    # still write: its notify() stores a row (db_version is still there).
    project.write("1.3.1", "during")

    project.shell("pgpubsub", DRAIN)
    assert project.deliveries() == [
        ("order_placed", "before"),
        ("order_placed", "during"),
        ("shipped", "before"),
        ("shipped", "during"),
    ]
    assert project.query("SELECT count(*) FROM pgpubsub_notification") == [(0,)]

    # Rollback, with pgpubsub still installed and the outbox drained: the
    # app's migration back, then pgpubsub's; then the migration file goes.
    project.run("pgpubsub", "migrate", "shop", "0001")
    project.run("pgpubsub", "migrate", "pgpubsub", "0006")
    switch.unlink()

    # Back on 1.3.1: nothing to migrate, nothing to make, its db_version
    # trigger is back, and its worker delivers a new row.
    project.run("1.3.1", "migrate", "--check")
    assert "No changes detected" in project.run("1.3.1", "makemigrations", "--check", "--dry-run")
    project.write("1.3.1", "after")
    [(db_version,)] = project.query(
        "SELECT db_version FROM pgpubsub_notification WHERE channel LIKE 'pgpubsub_%%'"
    )
    assert db_version is not None
    project.shell("1.3.1", DRAIN)
    assert ("order_placed", "after") in project.deliveries()
