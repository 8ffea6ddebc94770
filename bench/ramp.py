"""Finding the highest rate a system sustains within a latency bound (workloads 9 and 12).

Pure logic, no I/O: :func:`search` calls ``measure(rate)`` for the rates it
picks and decides from the answers. It doubles the rate from ``start``
while a step passes, then halves the interval between the last rate that
passed and the first that failed ``refine`` times. A step passes when
nothing was lost and its p99 is within the bound; the answer is the highest
rate that passed (None if even ``start`` failed).

Both the subscription hub (in ``bench/fanout.py``, one producer and one
subscriber process per step) and its ceiling (bare ``asyncio.Queue``\\ s, in
``bench/project/livetool.py``, in one process) are searched with it, so
the two figures are found the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass
class Step:
    """One rate tried: what it measured and whether it passed."""

    rate: float
    p50_ms: float | None
    p99_ms: float | None
    lost: int
    passed: bool
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def passes(result: dict[str, Any], bound_ms: float) -> bool:
    p99 = result.get("p99_ms")
    return not result.get("lost") and p99 is not None and p99 <= bound_ms


def search(
    measure: Callable[[float], dict[str, Any]],
    *,
    start: float,
    bound_ms: float,
    ceiling: float,
    refine: int,
) -> tuple[float | None, list[Step]]:
    """The highest rate (per second) that ``measure`` sustains within ``bound_ms``; the steps.

    ``measure(rate)`` returns at least ``p99_ms`` and ``lost``. Doubling
    stops at ``ceiling`` (a rate that passes there is the answer).
    """
    steps: list[Step] = []

    def run(rate: float) -> bool:
        result = measure(rate)
        ok = passes(result, bound_ms)
        steps.append(
            Step(
                rate=rate,
                p50_ms=result.get("p50_ms"),
                p99_ms=result.get("p99_ms"),
                lost=int(result.get("lost") or 0),
                passed=ok,
                extra={k: v for k, v in result.items() if k not in ("p50_ms", "p99_ms", "lost")},
            )
        )
        return ok

    good: float | None = None
    bad: float | None = None
    rate = start
    while True:
        if run(rate):
            good = rate
            if rate >= ceiling:
                return good, steps
            rate = min(rate * 2, ceiling)
        else:
            bad = rate
            break
    if good is None:
        return None, steps
    for _ in range(refine):
        middle = round((good + bad) / 2)
        if middle in (good, bad):
            break
        if run(middle):
            good = middle
        else:
            bad = middle
    return good, steps


def as_dicts(steps: list[Step]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(step) for step in steps]
