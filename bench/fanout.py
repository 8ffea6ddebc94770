"""Workloads 9 and 10: live subscriptions in one process (issue 14).

9. **Fan-out.** One process (``livetool.py fanout``) holds SUBSCRIBERS
   ``pgpubsub.subscribe(LiveChannel)`` subscriptions (a retained trigger
   channel with no listener). Another process (``livetool.py produce``)
   inserts one row per transaction at RATE rows/s and records when each
   COMMIT returned. Every subscriber records each event's primary key and
   the time it was yielded; the harness then counts, per subscriber, events
   lost, duplicated and out of commit order, and the commit-to-yield
   latency of every delivery. While it runs, the harness counts the
   process's connections in ``pg_stat_activity``. Each subscriber also checks
   that the event object it got is the one the other subscribers got: one
   object per event means one decode per process.

   Then the highest rate at which the p99 stays within 50 ms with nothing
   lost (``bench/ramp.py``: a fresh subscriber process and producer at each
   rate tried), and the same search over the *ceiling*: the same decoded
   events, fanned out in one process to SUBSCRIBERS bare ``asyncio.Queue``
   s with the same per-event recording and no database at all
   (``livetool.py ceiling``). The figure is the first over the second.

10. **Replay.** EVENTS rows are written after a checkpoint; one
    ``subscribe(LiveChannel, since=checkpoint)`` then reads them all. The
    rate over the whole replay, and over its first and its last tenth:
    reading by key, the last tenth is as fast as the first (reading by
    OFFSET, it would slow down as the offset grows).
"""

from __future__ import annotations

import itertools
import json
import select
import subprocess
from typing import Any

import ramp
from harness import (
    ALL_TABLES,
    PROJECT,
    WORK,
    BenchError,
    Impl,
    percentile,
    run_checked,
    spawn,
    stop_process,
    truncate,
)
from observe import ConnectionSampler

LIVETOOL = PROJECT / "livetool.py"
#: The latency bound of the highest-rate search (issue 14).
MAX_RATE_BOUND_MS = 50.0


def live_tool(impl: Impl, *args: str, timeout: float = 900) -> dict[str, Any]:
    out = run_checked([str(impl.python), str(LIVETOOL), *args], impl, timeout)
    return json.loads(out.strip().splitlines()[-1])


def live_process(impl: Impl, *args: str, log: str) -> subprocess.Popen[str]:
    return spawn([str(impl.python), str(LIVETOOL), *args], impl, log)


def wait_ready(proc: subprocess.Popen[str], what: str, timeout: float = 120) -> None:
    """Wait for the READY line of a process started with :func:`live_process`."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().strip() if ready else ""
    if line != "READY":
        raise BenchError(
            f"{what} did not start (said {line!r}; see bench/.work/logs/ for its output)"
        )


def produce(impl: Impl, rate: float, seconds: float) -> dict[str, Any]:
    return live_tool(
        impl, "produce", "--rate", str(rate), "--seconds", str(seconds), timeout=seconds + 300
    )


def judge(
    commits: list[list[float]], received: list[tuple[list[int], list[float]]]
) -> dict[str, Any]:
    """Correctness and commit-to-arrival latency of every delivery, over every receiver.

    ``commits``: [primary key, commit time] for every row written;
    ``received``: (primary keys, arrival times) per receiver, in arrival order.
    """
    commit_at = {int(pk): t for pk, t in commits}
    expected = set(commit_at)
    lost = duplicated = unexpected = out_of_order = incomplete = 0
    delays: list[float] = []
    for pks, times in received:
        seen = set(pks)
        missing = len(expected - seen)
        lost += missing
        incomplete += bool(missing)
        duplicated += len(pks) - len(seen)
        unexpected += len(seen - expected)
        out_of_order += sum(1 for a, b in itertools.pairwise(pks) if b <= a)
        delays.extend((t - commit_at[pk]) * 1000 for pk, t in zip(pks, times) if pk in commit_at)
    delays.sort()
    return {
        "events": len(expected),
        "receivers": len(received),
        "deliveries": len(delays),
        "lost": lost,
        "duplicated": duplicated,
        "unexpected": unexpected,
        "out_of_order": out_of_order,
        "receivers_missing_events": incomplete,
        "p50_ms": percentile(delays, 50) if delays else None,
        "p99_ms": percentile(delays, 99) if delays else None,
        "max_ms": delays[-1] if delays else None,
    }


def fanout_step(
    impl: Impl, subscribers: int, rate: float, seconds: float, stall: float
) -> dict[str, Any]:
    """SUBSCRIBERS subscriptions in one process, a producer at RATE rows/s for SECONDS."""
    truncate(impl, *ALL_TABLES)
    expect = round(rate * seconds)
    out = WORK / f"fanout-{impl.key}.json"
    out.unlink(missing_ok=True)
    proc = live_process(
        impl,
        *("fanout", "--subscribers", str(subscribers), "--expect", str(expect)),
        *("--stall", str(stall), "--out", str(out)),
        log="fanout",
    )
    try:
        wait_ready(proc, "the subscriber process (livetool.py fanout)")
        with ConnectionSampler(impl) as connections:
            produced = produce(impl, rate, seconds)
            proc.wait(timeout=seconds + stall + 300)
    finally:
        stop_process(proc)
    if not out.exists():
        raise BenchError(f"the subscriber process wrote no results ({out}); see bench/.work/logs/")
    dump = json.loads(out.read_text())
    out.unlink()
    received = [(s["pks"], s["ts"]) for s in dump["subscribers"]]
    result = judge(produced["commits"], received)
    errors = [s["error"] for s in dump["subscribers"] if s["error"]]
    result.update(
        rate=rate,
        rate_achieved=produced["rate_achieved"],
        producer_transactions=produced["transactions"],
        producer_cpu_pct=100 * produced["cpu_s"] / seconds,
        subscriber_cpu_pct=100 * dump["cpu_s"] / seconds,
        subscriptions_ended=len(errors),
        first_error=errors[0] if errors else None,
        # One object per event id across every subscriber: decoded once
        # (checked on the events whose key is a multiple of ``sample``).
        event_objects=dump["event_objects"],
        events_sampled=sum(1 for pk, _ in produced["commits"] if int(pk) % dump["sample"] == 0),
        event_object_copies=dump["copies"],
        **connections.summary(),
    )
    return result


def fanout(impl: Impl, cfg: Any, tick: Any = None) -> dict[str, Any]:
    """Workload 9 at the issue's rate: every subscriber gets every event, in order, soon."""
    return fanout_step(
        impl, cfg.fanout_subscribers, cfg.fanout_rate, cfg.fanout_seconds, cfg.fanout_stall
    )


def fanout_max(impl: Impl, cfg: Any, tick: Any = None) -> dict[str, Any]:
    """Workload 9: the highest rate with p99 commit-to-yield within 50 ms and nothing lost."""
    done = 0

    def measure(rate: float) -> dict[str, Any]:
        nonlocal done
        result = fanout_step(impl, cfg.fanout_subscribers, rate, cfg.ramp_seconds, cfg.fanout_stall)
        done += 1
        if tick is not None:
            tick(done, 0)
        # Anything but a clean delivery fails the step.
        result["lost"] += result["duplicated"] + result["out_of_order"] + result["unexpected"]
        return result

    best, steps = ramp.search(
        measure,
        start=cfg.fanout_rate,
        bound_ms=MAX_RATE_BOUND_MS,
        ceiling=cfg.ramp_top,
        refine=cfg.ramp_refine,
    )
    truncate(impl, *ALL_TABLES)
    return {"rate": best, "steps": ramp.as_dicts(steps)}


def ceiling(impl: Impl, cfg: Any) -> dict[str, Any]:
    """The same search over bare asyncio.Queues fed the same decoded events (no database)."""
    truncate(impl, *ALL_TABLES)
    result = live_tool(
        impl,
        *("ceiling", "--subscribers", str(cfg.fanout_subscribers)),
        *("--seconds", str(cfg.ramp_seconds), "--start", str(cfg.fanout_rate)),
        *("--top", str(cfg.ceiling_top), "--refine", str(cfg.ramp_refine)),
        *("--bound-ms", str(MAX_RATE_BOUND_MS)),
    )
    truncate(impl, *ALL_TABLES)
    return result


def replay(impl: Impl, cfg: Any) -> dict[str, Any]:
    """Workload 10: resume from a checkpoint REPLAY_EVENTS back."""
    truncate(impl, *ALL_TABLES)
    result = live_tool(impl, "replay", "--events", str(cfg.replay_events))
    truncate(impl, *ALL_TABLES)
    return result


__all__ = ["ceiling", "fanout", "fanout_max", "judge", "produce", "replay"]
