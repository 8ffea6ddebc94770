"""make compat's verdict (tools/compat/run.py): only a failure off the documented list fails it."""

from __future__ import annotations

import pytest

from tools.compat import run

EXPECTED = list(run.EXPECTED_FAILURES)


def outcome(failing: list[str], total: int = run.EXPECTED_TOTAL) -> dict[str, str]:
    found = {f"test_other.py::test_{i}": "passed" for i in range(total - len(failing))}
    found.update({test_id: "failed" for test_id in failing})
    return found


def test_the_expected_failures_alone_pass_and_are_listed_with_reasons(capsys):
    assert run.report(outcome(EXPECTED), 1.0) == 0
    printed = capsys.readouterr().out
    assert f"36 of {run.EXPECTED_TOTAL} passed, 4 failed" in printed
    for test_id, reason in run.EXPECTED_FAILURES.items():
        assert test_id in printed and reason in printed


def test_any_other_failure_fails(capsys):
    assert run.report(outcome([*EXPECTED, "test_core.py::test_new"]), 1.0) == 1
    assert "UNEXPECTED failures:\n  - test_core.py::test_new (failed)" in capsys.readouterr().out


def test_a_suite_that_did_not_run_whole_fails(capsys):
    assert run.report(outcome(EXPECTED, total=12), 1.0) == 1
    assert run.report(outcome(EXPECTED, total=12), 1.0, whole=False) == 0


@pytest.mark.parametrize("test_id", EXPECTED)
def test_each_expected_failure_is_named_in_the_migration_guide(test_id):
    name = test_id.split("::")[1].split("[")[0]
    assert f"``{name}``" in (run.MIGRATING.read_text(encoding="utf-8"))
