"""Workload 8's ratios in the benchmark report: each variant against the references beside it.

The machine's speed drifts over a round, so the harness runs the reference
(no trigger) between the variants, and the report divides each variant's
rate by the mean of the two references that bracket it in the round.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import pytest

from tests.conftest import REPO

# Loaded under its own name, without putting bench/ on sys.path: its modules'
# names (harness, streams, sseclient, ...) would shadow others for the session.
_spec = importlib.util.spec_from_file_location("bench_report", REPO / "bench" / "report.py")
assert _spec is not None and _spec.loader is not None
report = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = report  # dataclasses looks the module up by name
_spec.loader.exec_module(report)


def _run(position: int, tps: float, *, clients: int = 32, rnd: int = 1) -> dict[str, Any]:
    return {
        "clients": clients,
        "round": rnd,
        "position": position,
        "tps": tps,
        "lost": 0,
        "duplicated": 0,
    }


def _figure(results: dict[str, Any], key: str) -> report.Figure:
    return next(fig for fig in report.writes_figures(results) if fig.key == key)


def test_each_variant_is_compared_with_the_references_that_bracket_it() -> None:
    # The machine doubles its speed after the first variant: a variant that
    # runs as fast as the references beside it is at 1.0 wherever it runs.
    results = {
        "w8_reference": {"ours": [_run(0, 100), _run(2, 200), _run(4, 200)]},
        "w8_broadcast": {"ours": [_run(1, 150)]},
        "w8_durable": {"ours": [_run(3, 200)]},
    }
    assert _figure(results, "w8_broadcast_c32").ours == pytest.approx(1.0)
    assert _figure(results, "w8_durable_c32").ours == pytest.approx(1.0)


def test_a_variant_is_not_compared_with_references_of_another_round_or_writer_count() -> None:
    results = {
        "w8_reference": {
            "ours": [
                _run(0, 100),
                _run(2, 100),
                _run(0, 900, rnd=2),
                _run(2, 900, rnd=2),
                _run(0, 50, clients=1),
                _run(2, 50, clients=1),
            ]
        },
        "w8_broadcast": {"ours": [_run(1, 60), _run(1, 540, rnd=2), _run(1, 40, clients=1)]},
    }
    assert _figure(results, "w8_broadcast_c32").ours == pytest.approx(0.6)
    assert _figure(results, "w8_broadcast_c1").ours == pytest.approx(0.8)


def test_results_without_positions_fall_back_to_the_rounds_references() -> None:
    runs = [_run(0, 100), _run(0, 300)]
    for run in runs:
        del run["position"]
    variant = _run(0, 100)
    del variant["position"]
    results = {"w8_reference": {"ours": runs}, "w8_retained": {"ours": [variant]}}
    assert _figure(results, "w8_retained_c32").ours == pytest.approx(0.5)


def test_the_reference_note_says_how_far_neighbouring_runs_differed() -> None:
    results = {
        "w8_reference": {"ours": [_run(0, 100), _run(2, 100), _run(4, 150)]},
        "w8_broadcast": {"ours": [_run(1, 60)]},
    }
    note = _figure(results, "w8_reference_c32").note
    assert "neighbouring runs differ by" in note
    assert "40% at most" in note


def test_durable_is_judged_against_the_limit_that_stores_its_document() -> None:
    # Target 0.65 at 32 writers. The plain limit runs at 0.62, the limit
    # holding durable's document at 0.58; durable at 0.54 is within 10% of
    # the second (0.93 of it) but not of the first (0.87); retained at 0.54
    # is judged against the plain limit alone.
    results = {
        "w8_reference": {"ours": [_run(0, 100), _run(2, 100), _run(4, 100), _run(6, 100)]},
        "w8_floor_consumed": {"ours": [_run(1, 62)]},
        "w8_floor_document": {"ours": [_run(3, 58)]},
        "w8_durable": {"ours": [_run(5, 54)]},
        "w8_retained": {"ours": [_run(5, 54)]},
    }
    durable = _figure(results, "w8_durable_c32")
    assert durable.met is False and durable.at_limit
    assert report.verdict(durable) == "at limit"
    assert "limit with durable's document 0.58x, ours = 0.93 of it" in durable.note
    assert "ours = 0.87 of the limit" in durable.note
    retained = _figure(results, "w8_retained_c32")
    assert retained.met is False and not retained.at_limit
    assert report.verdict(retained) == "MISSED"


def test_without_the_document_limit_durable_is_judged_against_the_plain_limit() -> None:
    results = {
        "w8_reference": {"ours": [_run(0, 100), _run(2, 100)]},
        "w8_floor_consumed": {"ours": [_run(1, 62)]},
        "w8_durable": {"ours": [_run(1, 54)]},
    }
    durable = _figure(results, "w8_durable_c32")
    assert durable.met is False and not durable.at_limit
    assert "document" not in durable.note
