#!/usr/bin/env python3
"""Run django-pgpubsub 1.3.1's own test suite against pgpubsub (``make compat``).

1. Download django-pgpubsub 1.3.1's wheel from PyPI into ``.compat/`` (once;
   git-ignored; its SHA-256 is checked) and extract its ``pgpubsub/tests``
   afresh. Nothing of it is copied into the repository.
2. Do what a switching user does: ``makemigrations`` for the suite's app,
   which replaces 1.3.1's triggers with pgpubsub's. The generated migration
   stays in ``.compat/``.
3. Run the suite with pytest on the database in ``DATABASE_URL`` (``make
   compat`` starts the embedded server), with ``tools/compat/settings.py``.
4. Print the counts and the expected failures with their reasons.

The exit status is 0 when every test passes except the expected failures
listed in :data:`EXPECTED_FAILURES`, each of which asserts a 1.3.1
behaviour pgpubsub changed on purpose and is named in docs/migrating.rst
(checked here). It is 1 when any other test fails or the suite cannot run.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".compat"
VERSION = "1.3.1"
WHEEL = CACHE / f"django_pgpubsub-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "23c52525a0296698053177ae5a83d661cb6d83a59d82b09f3c95bd5d82626bd3"
#: Holds ``pgpubsub/tests`` and nothing else (see settings.py).
SUITE_ROOT = CACHE / VERSION
SUITE_PACKAGE = SUITE_ROOT / "pgpubsub"
SUITE = SUITE_PACKAGE / "tests"
REPORT = CACHE / "report.xml"
MIGRATING = REPO / "docs" / "migrating.rst"
EXPECTED_TOTAL = 40

#: Tests that assert a django-pgpubsub 1.3.1 behaviour pgpubsub changed on
#: purpose, with the reason. Each is named in docs/migrating.rst.
EXPECTED_FAILURES: dict[str, str] = {
    "test_core.py::test_author_bulk_insert_notify": (
        "AFTER triggers are statement-level: a bulk_create of 2 rows sends one wake-up "
        "NOTIFY, not one per row"
    ),
    "test_core.py::test_persistent_notification_has_a_db_version": (
        "the Notification model has no db_version field (1.3.1 filled it with a per-row "
        "trigger that read django_migrations)"
    ),
    "test_payload_context.py::test_notification_context_is_stored_in_payload[None-None]": (
        "PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT defaults to True: set_notification_context() "
        "outside atomic() raises"
    ),
    "test_payload_context.py::test_notification_context_is_stored_in_payload[None-default]": (
        "PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT defaults to True: set_notification_context() "
        "outside atomic() raises"
    ),
}


def say(message: str) -> None:
    print(f"compat: {message}", flush=True)


def fetch_wheel() -> None:
    if not WHEEL.exists():
        say(f"downloading django-pgpubsub {VERSION} from PyPI into {CACHE.relative_to(REPO)}/")
        CACHE.mkdir(exist_ok=True)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                f"django-pgpubsub=={VERSION}",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--quiet",
                "--dest",
                str(CACHE),
            ],
            check=True,
        )
    digest = hashlib.sha256(WHEEL.read_bytes()).hexdigest()
    if digest != WHEEL_SHA256:
        raise SystemExit(
            f"compat: {WHEEL.name} has SHA-256 {digest}, expected {WHEEL_SHA256}; "
            f"delete {CACHE.relative_to(REPO)}/ and run again"
        )


def extract_suite() -> None:
    shutil.rmtree(SUITE_ROOT, ignore_errors=True)
    with zipfile.ZipFile(WHEEL) as wheel:
        members = [name for name in wheel.namelist() if name.startswith("pgpubsub/tests/")]
        wheel.extractall(SUITE_ROOT, members)
    # The suite's own folder must be the only thing next to it: everything
    # else of pgpubsub comes from this repository.
    assert sorted(p.name for p in SUITE_PACKAGE.iterdir()) == ["tests"]


def environment() -> dict[str, str]:
    if not os.environ.get("DATABASE_URL"):
        raise SystemExit("compat: DATABASE_URL is not set; run `make compat`")
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "DJANGO_SETTINGS_MODULE": "tools.compat.settings",
        "PGPUBSUB_COMPAT_SUITE": str(SUITE_PACKAGE),
    }


def make_migrations(env: dict[str, str]) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "django",
            "makemigrations",
            "tests",
            "--name",
            "switch_to_pgpubsub",
            "--verbosity",
            "0",
        ],
        check=True,
        env=env,
        cwd=REPO,
    )
    generated = sorted(p.name for p in (SUITE / "migrations").glob("*switch_to_pgpubsub.py"))
    say(f"makemigrations wrote {', '.join(generated) or 'nothing'}")


def run_suite(env: dict[str, str], extra: list[str]) -> int:
    REPORT.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-c",
        str(Path(__file__).with_name("pytest.ini")),
        "--rootdir",
        str(SUITE_ROOT),
        f"--junit-xml={REPORT}",
        "-q",
        "-p",
        "no:randomly",
        str(SUITE),
        *extra,
    ]
    return subprocess.run(command, env=env, cwd=REPO).returncode


def results() -> dict[str, str]:
    """Test id (file::name[params]) -> passed, failed, error or skipped."""
    found: dict[str, str] = {}
    for case in ET.parse(REPORT).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        test_id = f"{module}.py::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
        found[test_id] = outcome
    return found


def report(found: dict[str, str], seconds: float, *, whole: bool = True) -> int:
    """Print the outcome; return the exit status (``whole``: the full suite was selected)."""
    passed = sorted(t for t, outcome in found.items() if outcome == "passed")
    failing = sorted(t for t, outcome in found.items() if outcome in ("failed", "error"))
    unexpected = [t for t in failing if t not in EXPECTED_FAILURES]
    expected = [t for t in failing if t in EXPECTED_FAILURES]
    now_passing = [t for t in EXPECTED_FAILURES if found.get(t) == "passed"]
    missing = [t for t in EXPECTED_FAILURES if t not in found]
    if not whole:
        missing = []
    docs = MIGRATING.read_text(encoding="utf-8")
    undocumented = [t for t in EXPECTED_FAILURES if t.split("::")[1].split("[")[0] not in docs]

    print()
    say(
        f"django-pgpubsub {VERSION}'s suite against pgpubsub: {len(passed)} of {len(found)} "
        f"passed, {len(failing)} failed ({seconds:.0f} s)"
    )
    if expected:
        say("expected failures (1.3.1 behaviour changed on purpose; see docs/migrating.rst):")
        for test_id in expected:
            print(f"  - {test_id}\n      {EXPECTED_FAILURES[test_id]}")
    status = 0
    if unexpected:
        status = 1
        say("UNEXPECTED failures:")
        for test_id in unexpected:
            print(f"  - {test_id} ({found[test_id]})")
    if whole and (len(found) != EXPECTED_TOTAL or missing):
        status = 1
        say(
            f"the suite ran {len(found)} tests, expected {EXPECTED_TOTAL}"
            + (f"; not run: {', '.join(missing)}" if missing else "")
        )
    if undocumented:
        status = 1
        say(f"expected failures not named in docs/migrating.rst: {', '.join(undocumented)}")
    if now_passing:
        say(
            "these expected failures now pass; take them off EXPECTED_FAILURES and "
            f"docs/migrating.rst: {', '.join(now_passing)}"
        )
    return status


def main(argv: list[str]) -> int:
    started = time.monotonic()
    fetch_wheel()
    extract_suite()
    env = environment()
    make_migrations(env)
    run_suite(env, argv)
    if not REPORT.exists():
        say("pytest wrote no report; the suite could not run")
        return 1
    # Extra pytest arguments (-k, a test id) may select part of the suite.
    return report(results(), time.monotonic() - started, whole=not argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
