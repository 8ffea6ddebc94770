"""The workloads of issue 6, each run once against one implementation.

Every function returns a dict of plain numbers (and the correctness tally),
which ``run.py`` collects per round and summarises.
"""

from __future__ import annotations

import dataclasses
import select
import time
from typing import Any

from harness import (
    ALL_TABLES,
    Impl,
    RssSampler,
    Tally,
    cpu_seconds,
    percentile,
    stop_process,
    tally,
    truncate,
    wait_for,
    wait_idle,
    workers,
)

ROW_CHANNELS = {
    "broadcast": (
        "benchapp.channels.BroadcastRowChannel",
        "broadcast_row",
        "benchapp_broadcastrow",
    ),
    "durable": ("benchapp.channels.DurableRowChannel", "durable_row", "benchapp_durablerow"),
    # Only when the installed library can declare it (see benchapp/channels.py).
    "retained": (
        "benchapp.channels.RetainedRowChannel",
        "retained_row",
        "benchapp_timedretainedrow",
    ),
}
#: The bench channel class each ROW_CHANNELS mode needs.
ROW_CHANNEL_CLASSES = {mode: path.rsplit(".", 1)[1] for mode, (path, *_) in ROW_CHANNELS.items()}
MESSAGE_CHANNELS = {
    "broadcast": ("benchapp.channels.BroadcastMessage", "broadcast_msg"),
    "durable": ("benchapp.channels.DurableMessage", "durable_msg"),
}
ALL_CHANNELS = [ROW_CHANNELS[mode][0] for mode in ("broadcast", "durable")] + [
    path for path, _ in MESSAGE_CHANNELS.values()
]


@dataclasses.dataclass
class Config:
    """Sizes and deadlines; :meth:`smoke` is the CI variant."""

    rounds: int = 3
    events: int = 10_000
    batch: int = 500
    latency_events: int = 2_000
    latency_rate: float = 200.0
    write_rows: int = 50_000
    backlog_small: int = 1_000
    backlog_big: int = 100_000
    #: How many rounds measure the big backlog (it takes long with 1.3.1).
    backlog_big_rounds: int = 3
    #: Memory growth is measured from this many events into the big drain.
    rss_baseline_events: int = 1_000
    idle_seconds: float = 10.0
    #: Give up waiting after this long without progress / in all.
    stall: float = 20.0
    deadline: float = 600.0
    warm_up_deadline: float = 30.0
    #: Workload 8: pgbench clients (writers) per measurement, seconds each
    #: (whole seconds: pgbench's --time), pgbench threads.
    w8_writers: tuple[int, ...] = (1, 8, 32, 64)
    w8_seconds: int = 5
    w8_threads: int = 2
    #: Also measure our triggers with the bare consumer (``--w8-bare``).
    w8_bare: bool = False
    #: Only these variants of workload 8 (keys; empty: all).
    w8_variants: tuple[str, ...] = ()
    #: How long the worker may take to catch up after a burst.
    w8_drain_deadline: float = 60.0
    #: Workload 9 (issue 14): subscribers in one process, the producer's
    #: rate and seconds; a subscriber process gives up after this long
    #: without an event.
    fanout_subscribers: int = 100
    fanout_rate: float = 200.0
    fanout_seconds: float = 20.0
    fanout_stall: float = 10.0
    #: The searches for the highest rate within the latency bound (workloads
    #: 9 and 12): seconds per rate tried, the highest rate tried (doubling
    #: from the issue's rate), the halvings between the last pass and the
    #: first failure. The ceiling (bare queues, no database) goes higher.
    ramp_seconds: float = 5.0
    ramp_top: float = 25_600.0
    ramp_refine: int = 3
    ceiling_top: float = 204_800.0
    #: Workload 10: the events a subscription replays from its checkpoint.
    replay_events: int = 100_000
    #: Workloads 11 and 12 (issue 16): SSE clients of one server process,
    #: events/s and seconds; the collapse search's seconds per rate, highest
    #: rate and halvings; how long the slow client stops reading.
    sse_clients: int = 1000
    sse_rate: float = 10.0
    sse_seconds: float = 20.0
    sse_ramp_seconds: float = 10.0
    sse_ramp_top: float = 1280.0
    sse_ramp_refine: int = 2
    sse_stall: float = 10.0
    #: The slow-client measurement: clients that read, rate and seconds
    #: (a higher rate than the fan-out's, so that the server's buffers fill
    #: in seconds), and how long the slow client stops reading.
    sse_slow_clients: int = 100
    sse_slow_rate: float = 400.0
    sse_slow_seconds: float = 10.0
    sse_slow_pause: float = 6.0

    @classmethod
    def smoke(cls) -> Config:
        return cls(
            rounds=1,
            events=500,
            batch=100,
            latency_events=100,
            write_rows=2_000,
            backlog_small=200,
            backlog_big=2_000,
            rss_baseline_events=200,
            idle_seconds=2.0,
            stall=15.0,
            deadline=120.0,
            w8_writers=(1, 8),
            w8_seconds=1,
            w8_drain_deadline=30.0,
            fanout_subscribers=10,
            fanout_rate=50.0,
            fanout_seconds=2.0,
            fanout_stall=5.0,
            ramp_seconds=1.0,
            ramp_top=100.0,
            ramp_refine=0,
            ceiling_top=400.0,
            replay_events=2_000,
            sse_clients=20,
            sse_rate=10.0,
            sse_seconds=2.0,
            sse_ramp_seconds=1.0,
            sse_ramp_top=20.0,
            sse_ramp_refine=0,
            sse_stall=5.0,
            sse_slow_clients=10,
            sse_slow_rate=400.0,
            sse_slow_seconds=8.0,
            sse_slow_pause=6.0,
        )


def _tally_dict(t: Tally) -> dict[str, Any]:
    return {
        "lost": t.lost,
        "duplicated": t.duplicated,
        "unexpected": t.unexpected,
        "handled": t.distinct,
        "timed_out": t.timed_out,
    }


def _throughput(t: Tally, started: float) -> float | None:
    """Events handled per second from the producer's start to the last listener call."""
    if not t.distinct or t.last_seen is None or t.last_seen <= started:
        return None
    return t.distinct / (t.last_seen - started)


def trigger_throughput(impl: Impl, cfg: Config, mode: str, count: int, tick: Any) -> dict[str, Any]:
    """Workloads 1 and 2: ``bulk_create`` into a TriggerChannel's model, BATCH per transaction."""
    channel, kind, _ = ROW_CHANNELS[mode]
    truncate(impl, *ALL_TABLES)
    with workers(impl, [channel], count) as procs:
        produced = impl.tool(
            "bulk",
            *("--mode", mode, "--n", str(cfg.events), "--batch", str(cfg.batch)),
            *("--workers", str(count), "--deadline", str(cfg.warm_up_deadline)),
        )
        t = wait_for(
            impl, kind, cfg.events, stall=cfg.stall, deadline=cfg.deadline, procs=procs, tick=tick
        )
    return {
        "rate": _throughput(t, produced["t_start"]),
        "producer_s": produced["t_end"] - produced["t_start"],
        **_tally_dict(t),
    }


def notify_throughput(impl: Impl, cfg: Config, mode: str, tick: Any) -> dict[str, Any]:
    """Workload 3: ``pgpubsub.notify()``, BATCH calls per transaction, one worker."""
    channel, kind = MESSAGE_CHANNELS[mode]
    truncate(impl, *ALL_TABLES)
    with workers(impl, [channel], 1) as procs:
        produced = impl.tool(
            "notify",
            *("--mode", mode, "--n", str(cfg.events), "--batch", str(cfg.batch)),
            *("--workers", "1", "--deadline", str(cfg.warm_up_deadline)),
        )
        t = wait_for(
            impl, kind, cfg.events, stall=cfg.stall, deadline=cfg.deadline, procs=procs, tick=tick
        )
    return {
        "rate": _throughput(t, produced["t_start"]),
        "producer_s": produced["t_end"] - produced["t_start"],
        "warm_up_answered": produced["warm_up_s"] >= 0,
        **_tally_dict(t),
    }


def bare_loop(impl: Impl, cfg: Config, tick: Any) -> dict[str, Any]:
    """The ceiling: psycopg LISTEN + one ORM insert per NOTIFY, BATCH per transaction."""
    truncate(impl, *ALL_TABLES)
    proc = impl.tool_process("bare", "--n", str(cfg.events), "--batch", str(cfg.batch), log="bare")
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 60)
        if not ready or proc.stdout.readline().strip() != "READY":
            raise RuntimeError("the bare loop did not start")
        produced = impl.tool("bare-produce", "--n", str(cfg.events), "--batch", str(cfg.batch))
        t = wait_for(
            impl, "bare", cfg.events, stall=cfg.stall, deadline=cfg.deadline, procs=[], tick=tick
        )
    finally:
        stop_process(proc)
    return {"rate": _throughput(t, produced["t_start"]), **_tally_dict(t)}


def listener_only(impl: Impl, cfg: Config) -> dict[str, Any]:
    """The ceiling of workloads 1 and 3: the listeners' ORM insert alone, no notifications.

    The same function the listeners call, EVENTS times, BATCH per
    transaction, in one process: what a worker would reach if receiving,
    decoding and dispatching an event cost nothing.
    """
    truncate(impl, *ALL_TABLES)
    produced = impl.tool("listener-only", "--n", str(cfg.events), "--batch", str(cfg.batch))
    t = tally(impl, "listener_only", cfg.events)
    rate = cfg.events / (produced["t_end"] - produced["t_start"])
    return {"rate": rate if t.ok else None, **_tally_dict(t)}


def latency(impl: Impl, cfg: Config, mode: str, tick: Any) -> dict[str, Any]:
    """Workload 4: one row per transaction at RATE/s; commit-to-listener latency."""
    channel, kind, _ = ROW_CHANNELS[mode]
    truncate(impl, *ALL_TABLES)
    with workers(impl, [channel], 1) as procs:
        produced = impl.tool(
            "paced",
            *("--mode", mode, "--n", str(cfg.latency_events), "--rate", str(cfg.latency_rate)),
            *("--workers", "1", "--deadline", str(cfg.warm_up_deadline)),
        )
        t = wait_for(
            impl,
            kind,
            cfg.latency_events,
            stall=cfg.stall,
            deadline=cfg.deadline,
            procs=procs,
            tick=tick,
        )
    with impl.connect() as conn:
        seen = dict(
            conn.execute(
                "SELECT ref, min(seen_at) FROM benchapp_processed WHERE kind = %s GROUP BY ref",
                [kind],
            ).fetchall()
        )
    delays = [(seen[pk] - committed) * 1000 for pk, committed in produced["commits"] if pk in seen]
    achieved = cfg.latency_events / (produced["t_end"] - produced["t_start"])
    return {
        "p50_ms": percentile(delays, 50) if delays else None,
        "p99_ms": percentile(delays, 99) if delays else None,
        "max_ms": max(delays) if delays else None,
        "rate_achieved": achieved,
        **_tally_dict(t),
    }


def write_path(impl: Impl, cfg: Config, retained: bool = False) -> dict[str, Any]:
    """Workload 5: one INSERT ... SELECT of WRITE_ROWS rows, with each trigger and with none.

    No worker runs: this is the writer's cost alone. The tables have the
    same columns; only the trigger differs. With ``retained`` (ours, once
    it has ``retention``), also the retained ``LiveChannel``'s table, whose
    trigger writes each row's event to the event log (issue 14).
    """
    statement = "INSERT INTO {table} (n, label) SELECT g, '' FROM generate_series(1, %s::int) AS g"
    tables = [
        ("none", "benchapp_plainrow"),
        ("broadcast", "benchapp_broadcastrow"),
        ("durable", "benchapp_durablerow"),
    ]
    if retained:
        tables.append(("retained", "benchapp_liverow"))
    seconds: dict[str, float] = {}
    for name, table in tables:
        truncate(impl, *ALL_TABLES)
        with impl.connect() as conn:
            conn.autocommit = False
            started = time.perf_counter()
            conn.execute(statement.format(table=table), [cfg.write_rows])  # type: ignore[arg-type]
            conn.commit()
            seconds[name] = time.perf_counter() - started
    truncate(impl, *ALL_TABLES)
    result = {
        "none_s": seconds["none"],
        "broadcast_s": seconds["broadcast"],
        "durable_s": seconds["durable"],
        "broadcast_x": seconds["broadcast"] / seconds["none"],
        "durable_x": seconds["durable"] / seconds["none"],
    }
    if retained:
        result["retained_s"] = seconds["retained"]
        result["retained_x"] = seconds["retained"] / seconds["none"]
    return result


def drain(impl: Impl, cfg: Config, size: int, tick: Any) -> dict[str, Any]:
    """Workloads 6 and 7 (memory): a durable backlog of SIZE events, then one worker.

    The backlog is written with no worker running (10,000 rows per INSERT
    statement). django-pgpubsub 1.3.1 processes stored notifications only
    when told to, so its worker runs with ``--recover``. The drain rate is
    taken between the first and the last listener call, so the worker's
    start-up is not counted.
    """
    channel, kind, table = ROW_CHANNELS["durable"]
    truncate(impl, *ALL_TABLES)
    with impl.connect() as conn:
        for first in range(1, size + 1, 10_000):
            last = min(size, first + 9_999)
            conn.execute(
                f"INSERT INTO {table} (n, label) "  # type: ignore[arg-type]
                "SELECT g, '' FROM generate_series(%s::int, %s::int) AS g",
                [first, last],
            )
    # django-pgpubsub 1.3.1 recovers a whole backlog in one transaction: nothing
    # shows until it commits, so no progress for a while is no reason to stop.
    stall = cfg.deadline if impl.key == "theirs" else cfg.stall
    with workers(impl, [channel], 1, recover=impl.key == "theirs") as procs:
        with RssSampler(procs[0].pid) as sampler:
            t = wait_for(
                impl, kind, size, stall=stall, deadline=cfg.deadline, procs=procs, tick=tick
            )
        cpu = cpu_seconds(procs[0].pid) if procs[0].poll() is None else None
    result: dict[str, Any] = {"worker_cpu_s": cpu, **_tally_dict(t)}
    if t.first_seen is not None and t.last_seen is not None and t.last_seen > t.first_seen:
        result["rate"] = (t.distinct - 1) / (t.last_seen - t.first_seen)
    else:
        result["rate"] = None
    samples = sampler.samples
    if samples:
        result["rss_peak_mb"] = max(rss for _, rss in samples) / 2**20
        baseline_at = _seen_at_rank(impl, kind, min(cfg.rss_baseline_events, size))
        if baseline_at is not None:
            before = [rss for when, rss in samples if when <= baseline_at]
            after = [rss for when, rss in samples if when >= baseline_at]
            if before and after:
                result["rss_baseline_mb"] = before[-1] / 2**20
                result["rss_growth_mb"] = (max(after) - before[-1]) / 2**20
    return result


def _seen_at_rank(impl: Impl, kind: str, rank: int) -> float | None:
    with impl.connect() as conn:
        row = conn.execute(
            "SELECT seen_at FROM benchapp_processed WHERE kind = %s ORDER BY seen_at "
            "OFFSET %s LIMIT 1",
            [kind, max(0, rank - 1)],
        ).fetchone()
    return None if row is None else row[0]


def idle_cpu(impl: Impl, cfg: Config) -> dict[str, Any]:
    """Workload 7: CPU of a warm, idle worker listening on every bench channel."""
    truncate(impl, *ALL_TABLES)
    with workers(impl, ALL_CHANNELS, 1) as procs:
        impl.tool(
            "bulk",
            *("--mode", "broadcast", "--n", "0", "--workers", "1"),
            *("--deadline", str(cfg.warm_up_deadline)),
        )
        pid = procs[0].pid
        wait_idle(pid)  # done with the warm-up's events
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        time.sleep(cfg.idle_seconds)
        cpu1, wall1 = cpu_seconds(pid), time.monotonic()
        alive = procs[0].poll() is None
    return {"cpu_pct": 100 * (cpu1 - cpu0) / (wall1 - wall0) if alive else None}


__all__ = [
    "ALL_CHANNELS",
    "ROW_CHANNEL_CLASSES",
    "Config",
    "bare_loop",
    "drain",
    "idle_cpu",
    "latency",
    "notify_throughput",
    "tally",
    "trigger_throughput",
    "write_path",
]
