"""Side-by-side benchmark of pgpubsub against django-pgpubsub 1.3.1 (issue 6).

Run it with ``make bench`` (embedded PostgreSQL unless ``DATABASE_URL`` is
set). It needs ``DATABASE_URL`` pointing at a server where it may create
databases: it creates ``bench_ours`` and ``bench_theirs`` (``bench_smoke_*``
in smoke mode) and drops them again at the end.

Options (environment variables in brackets):

``--smoke`` [``BENCH_SMOKE=1``]
    small sizes, one round, ours and the bare loop only: a quick check, for CI,
    that the benchmark still works and that nothing is lost or duplicated.
``--rounds N`` [``BENCH_ROUNDS``]
    rounds of A B alternation (default 3); figures are medians over them.
``--no-theirs`` [``BENCH_NO_THEIRS=1``]
    skip django-pgpubsub 1.3.1 (no virtualenv is created).
``--theirs``
    include django-pgpubsub 1.3.1 in a smoke run.
``--only W,...``
    run only some workloads: w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12.
``--w8-seconds N`` [``BENCH_W8_SECONDS``]
    seconds of pgbench per measurement of workload 8 (default 5; smoke 1).
``--w8-writers N,...`` [``BENCH_W8_WRITERS``]
    pgbench clients of workload 8 (default 1,8,32,64; smoke 1,8).
``--w8-bare`` [``BENCH_W8_BARE=1``]
    also measure our durable and retained triggers with a bare consumer on
    their tables in place of our worker (``benchtool.py floor-consume``).
``--w8-variants KEY,...`` [``BENCH_W8_VARIANTS``]
    measure only these variants of workload 8 (the reference always runs),
    e.g. ``floor_consumed,durable,bare_durable``: for a focused run with
    more rounds. An unknown key is an error that lists the known ones.
``--no-eventstream`` [``BENCH_NO_EVENTSTREAM=1``]
    skip django-eventstream in workloads 11 and 12 (``--eventstream`` includes
    it in a smoke run).
``BENCH_UVICORN=plain``, ``BENCH_SERVER_GC=default``
    serve workloads 11 and 12 on asyncio's loop and h11 instead of uvloop
    and httptools, and with Python's default collector thresholds instead of
    the tuned ones of ``docs/live.rst`` (both servers alike).
``--publish``
    after the run, copy the chart to ``docs/_static/bench.png`` and the table
    into ``docs/benchmarks.rst``.

Results go to ``bench/results/latest.json`` and ``latest.png`` (``smoke.*``
in smoke mode). The exit status is 1 when our implementation lost or
duplicated an event (or, in workload 8, had not handled them all when the
worker's deadline ran out), or the harness failed; a missed speed target is
reported, not an error. A channel kind that the installed pgpubsub cannot
declare (the retained kind before issue 14) is skipped, and the run says so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import chart
import fanout
import livereport
import psycopg
import report
import streams
import workloads as wl
import writes
from harness import (
    ALL_TABLES,
    BENCH_DIR,
    REPO,
    BenchError,
    Impl,
    drop_database,
    ensure_theirs_venv,
    prepare_project,
    recreate_database,
    server_label,
    server_url,
    truncate,
)

RESULTS = BENCH_DIR / "results"
DOCS = REPO / "docs"
BEGIN_MARK = ".. BEGIN FIGURES (written by bench/run.py --publish; do not edit by hand)"
END_MARK = ".. END FIGURES"

Step = tuple[str, str, str, Callable[[Any], dict[str, Any]]]
#: Workload 8 runs the reference after this many variants (and first and last).
W8_REFERENCE_EVERY = 2

WORKLOADS = {"w1", "w2", "w3", "w4", "w5", "w6", "w7", "w8", "w9", "w10", "w11", "w12"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", default=_env_flag("BENCH_SMOKE"))
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "0")))
    parser.add_argument("--no-theirs", action="store_true", default=_env_flag("BENCH_NO_THEIRS"))
    parser.add_argument("--theirs", action="store_true", help="include 1.3.1 in a smoke run too")
    parser.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""))
    parser.add_argument(
        "--w8-seconds", type=int, default=int(os.environ.get("BENCH_W8_SECONDS", "0"))
    )
    parser.add_argument("--w8-writers", default=os.environ.get("BENCH_W8_WRITERS", ""))
    parser.add_argument("--w8-bare", action="store_true", default=_env_flag("BENCH_W8_BARE"))
    parser.add_argument("--w8-variants", default=os.environ.get("BENCH_W8_VARIANTS", ""))
    parser.add_argument(
        "--no-eventstream", action="store_true", default=_env_flag("BENCH_NO_EVENTSTREAM")
    )
    parser.add_argument(
        "--eventstream", action="store_true", help="include django-eventstream in a smoke run"
    )
    parser.add_argument("--publish", action="store_true")
    parser.add_argument(
        "--publish-only",
        action="store_true",
        help="redraw the chart from bench/results/latest.json and publish it, without running",
    )
    return parser.parse_args(argv)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def plan(
    cfg: wl.Config,
    impls: list[Impl],
    only: set[str],
    unsupported: dict[str, str],
    w8: writes.Settings | None,
    servers: dict[str, streams.Server] | None = None,
) -> list[tuple[int, Step]]:
    """Every measurement of the run, round by round, alternating the implementations.

    ``unsupported`` (bench channel class -> why) drops the measurements of
    channels that our installed pgpubsub cannot declare; ``w8`` is None when
    workload 8 is not run; ``servers`` are the stream servers of workloads 11
    and 12 by key (ours, and django-eventstream's unless skipped).
    """
    ours = impls[0]
    steps: list[tuple[int, Step]] = []
    for rnd in range(cfg.rounds):

        def add(
            workload: str,
            name: str,
            label: str,
            fn: Callable[..., dict[str, Any]],
            rnd: int = rnd,
            for_impls: list[Impl] = impls,
        ) -> None:
            if not only or workload in only:
                for impl in for_impls:
                    steps.append((rnd, (name, impl.key, label, _bind(fn, impl))))

        add("w1", "w1_broadcast_trigger", "1 broadcast trigger", _trigger(cfg, "broadcast", 1))
        if not only or "w1" in only:
            steps.append((rnd, ("bare", ours.key, "1 bare psycopg loop", _bind(_bare(cfg), ours))))
        if not only or only & {"w1", "w3"}:
            steps.append(
                (rnd, ("ceiling", ours.key, "1/3 listener alone", _bind(_ceiling(cfg), ours)))
            )
        add("w2", "w2_durable_trigger", "2 durable trigger x2", _trigger(cfg, "durable", 2))
        add("w3", "w3_notify_broadcast", "3 notify() broadcast", _notify(cfg, "broadcast"))
        add("w3", "w3_notify_durable", "3 notify() durable", _notify(cfg, "durable"))
        add("w4", "w4_latency_broadcast", "4 latency broadcast", _latency(cfg, "broadcast"))
        add("w4", "w4_latency_durable", "4 latency durable", _latency(cfg, "durable"))
        if wl.ROW_CHANNEL_CLASSES["retained"] not in unsupported:
            # django-pgpubsub 1.3.1 has no retention: ours only.
            latency = _latency(cfg, "retained")
            add("w4", "w4_latency_retained", "4 latency retained", latency, for_impls=[ours])
        live = "LiveChannel" not in unsupported
        add(
            "w5",
            "w5_write_path",
            "5 write path",
            lambda impl, live=live: wl.write_path(impl, cfg, retained=live and impl is ours),
        )
        add("w6", "w6_drain_small", f"6 drain {cfg.backlog_small:,}", _drain(cfg, "small"))
        if rnd < cfg.backlog_big_rounds:
            add("w6", "w6_drain_big", f"6/7 drain {cfg.backlog_big:,}", _drain(cfg, "big"))
        add("w7", "w7_idle", "7 idle CPU", lambda impl: wl.idle_cpu(impl, cfg))
        if w8 is not None:
            steps.extend((rnd, step) for step in _writes(cfg, impls, unsupported, w8, rnd))
        if live:
            steps.extend((rnd, step) for step in _live(cfg, ours, only, servers or {}))
    return steps


def _live(
    cfg: wl.Config, ours: Impl, only: set[str], servers: dict[str, streams.Server]
) -> list[Step]:
    """Workloads 9 to 12 of one round (issues 14 and 16); streams alternate the servers."""
    steps: list[Step] = []

    def want(workload: str) -> bool:
        return not only or workload in only

    def bound(fn: Callable[..., dict[str, Any]]) -> Callable[[Any], dict[str, Any]]:
        return lambda tick: fn(ours, cfg, tick)

    if want("w9"):
        subs = f"{cfg.fanout_subscribers} subscribers"
        label = f"9 fan-out, {subs} @ {cfg.fanout_rate:g}/s"
        steps.append(("w9_fanout", "ours", label, bound(fanout.fanout)))
        steps.append(("w9_fanout_max", "ours", f"9 highest rate, {subs}", bound(fanout.fanout_max)))
        label = f"9 ceiling, {subs} bare queues"
        steps.append(("w9_ceiling", "ours", label, lambda t: fanout.ceiling(ours, cfg)))
    if want("w10"):
        label = f"10 replay {cfg.replay_events:,}"
        steps.append(("w10_replay", "ours", label, lambda t: fanout.replay(ours, cfg)))
    for server in servers.values():
        if want("w11"):
            steps.append(
                (
                    "w11_sse",
                    server.key,
                    f"11 SSE {cfg.sse_clients:,} clients @ {cfg.sse_rate:g}/s",
                    lambda t, s=server: streams.fan_out(s, cfg),
                )
            )
            steps.append(
                (
                    "w11_slow",
                    server.key,
                    f"11 SSE slow client @ {cfg.sse_slow_rate:g}/s",
                    lambda t, s=server: streams.slow_client(s, cfg),
                )
            )
        if want("w12"):
            steps.append(
                (
                    "w12_collapse",
                    server.key,
                    f"12 SSE collapse, {cfg.sse_clients:,} clients",
                    lambda t, s=server: streams.collapse(s, cfg, t),
                )
            )
    return steps


def _writes(
    cfg: wl.Config,
    impls: list[Impl],
    unsupported: dict[str, str],
    settings: writes.Settings,
    rnd: int,
) -> list[Step]:
    """Workload 8 of round ``rnd``: every variant at each number of writers.

    At each number of writers the reference (no trigger) runs first, last,
    and after every :data:`W8_REFERENCE_EVERY` variants, so that every
    variant runs next to a reference and is compared with the two that
    bracket it: these machines drift by up to a third over a round. Every
    other round runs the variants in reverse order, so that no variant
    always runs right after the reference or the other library's twin.
    """
    by_key = {impl.key: impl for impl in impls}
    middle = writes.variants(unsupported, with_theirs="theirs" in by_key, with_bare=cfg.w8_bare)
    if cfg.w8_variants:
        middle = [v for v in middle if v.key in cfg.w8_variants]
    if rnd % 2:
        middle.reverse()
    group = [writes.REFERENCE]
    for start in range(0, len(middle), W8_REFERENCE_EVERY):
        group += [*middle[start : start + W8_REFERENCE_EVERY], writes.REFERENCE]
    steps: list[Step] = []
    for clients in cfg.w8_writers:
        for position, variant in enumerate(group):

            def measure(
                tick: Any,
                variant: writes.Variant = variant,
                clients: int = clients,
                position: int = position,
            ) -> dict[str, Any]:
                result = writes.measure(by_key[variant.impl], variant, clients, settings, tick)
                return {**result, "position": position}

            label = f"8 {variant.label}, {clients} writer{'s' if clients > 1 else ''}"
            steps.append((f"w8_{variant.key}", variant.impl, label, measure))
    return steps


def _bind(fn: Callable[..., dict[str, Any]], impl: Impl) -> Callable[[Any], dict[str, Any]]:
    return lambda tick: fn(impl, tick) if _wants_tick(fn) else fn(impl)


def _wants_tick(fn: Callable[..., Any]) -> bool:
    return getattr(fn, "wants_tick", False)


def _ticking(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    fn.wants_tick = True  # type: ignore[attr-defined]
    return fn


def _trigger(cfg: wl.Config, mode: str, count: int) -> Callable[..., dict[str, Any]]:
    return _ticking(lambda impl, tick: wl.trigger_throughput(impl, cfg, mode, count, tick))


def _notify(cfg: wl.Config, mode: str) -> Callable[..., dict[str, Any]]:
    return _ticking(lambda impl, tick: wl.notify_throughput(impl, cfg, mode, tick))


def _bare(cfg: wl.Config) -> Callable[..., dict[str, Any]]:
    return _ticking(lambda impl, tick: wl.bare_loop(impl, cfg, tick))


def _ceiling(cfg: wl.Config) -> Callable[..., dict[str, Any]]:
    return lambda impl: wl.listener_only(impl, cfg)


def _latency(cfg: wl.Config, mode: str) -> Callable[..., dict[str, Any]]:
    return _ticking(lambda impl, tick: wl.latency(impl, cfg, mode, tick))


def _drain(cfg: wl.Config, size: str) -> Callable[..., dict[str, Any]]:
    events = cfg.backlog_small if size == "small" else cfg.backlog_big
    return _ticking(lambda impl, tick: wl.drain(impl, cfg, events, tick))


def versions(impl: Impl) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({p: m.version(p) for p in "
        "('pgpubsub-django' if __import__('os').environ['BENCH_IMPL'] == 'ours' "
        "else 'django-pgpubsub', "
        "'Django', 'django-pgtrigger', 'psycopg')}))"
    )
    out = subprocess.run(
        [str(impl.python), "-c", code], env=impl.env(), capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.publish_only:
        saved = json.loads((RESULTS / "latest.json").read_text())
        figures = report.summarise(saved["runs"])
        theirs = "theirs" in saved["meta"]["versions"]
        # Redrawn from the saved figures, so a change to the chart needs no new run.
        chart.draw(figures, RESULTS / "latest.png", chart_title(saved["meta"], smoke=False))
        publish(
            RESULTS / "latest.png",
            figures,
            saved["meta"],
            theirs,
            livereport.summarise(saved["runs"]),
        )
        return 0
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )
    from rich.table import Table

    # Wide enough for the table when the output is a file or a CI log.
    console = Console(width=None if sys.stdout.isatty() else 180)
    cfg = wl.Config.smoke() if args.smoke else wl.Config()
    if args.rounds:
        cfg.rounds = args.rounds
    if args.w8_seconds:
        cfg.w8_seconds = args.w8_seconds
    if args.w8_writers:
        cfg.w8_writers = _writer_counts(args.w8_writers)
    cfg.w8_bare = args.w8_bare
    cfg.w8_variants = tuple(v.strip() for v in args.w8_variants.split(",") if v.strip())
    with_theirs = not (args.smoke or args.no_theirs) or args.theirs
    only = {w.strip() for w in args.only.split(",") if w.strip()}
    unknown = only - WORKLOADS
    if unknown:
        raise BenchError(
            f"--only {args.only!r}: no workload {', '.join(sorted(unknown))}; "
            f"the workloads are {', '.join(sorted(WORKLOADS))}"
        )
    run_w8 = not only or "w8" in only
    known_w8 = {v.key for v in writes.variants({}, with_theirs=True, with_bare=True)}
    unknown_w8 = set(cfg.w8_variants) - known_w8
    if unknown_w8:
        raise BenchError(
            f"--w8-variants {args.w8_variants!r}: no variant {', '.join(sorted(unknown_w8))}; "
            f"the variants are {', '.join(sorted(known_w8))}"
        )
    # Before anything is prepared: a missing pgbench should not cost a run's set-up.
    pgbench = writes.find_pgbench() if run_w8 else None
    prefix = "bench_smoke" if args.smoke else "bench"

    server = server_url()
    console.print(f"[bold]pgpubsub benchmark[/] on {server_label(server)}, {os.cpu_count()} cores")
    impls = [Impl("ours", "pgpubsub (this repository)", Path(sys.executable), "")]
    if with_theirs:
        theirs_python = ensure_theirs_venv(console.print)
        impls.append(Impl("theirs", "django-pgpubsub 1.3.1", theirs_python, ""))
    for impl in impls:
        console.print(f"preparing {impl.label}: database {prefix}_{impl.key}, migrations")
        impl.db_url = recreate_database(server, f"{prefix}_{impl.key}")
        prepare_project(impl)
    unsupported: dict[str, str] = impls[0].tool("unsupported")
    for channel, why in unsupported.items():
        console.print(f"skipped: {channel} and its measurements ({why})")
    w8: writes.Settings | None = None
    if pgbench is not None:
        console.print(f"workload 8: {writes.pgbench_version(pgbench)} ({pgbench})")
        writes.create_floors(impls[0])
        w8 = writes.Settings(
            pgbench=pgbench,
            seconds=cfg.w8_seconds,
            threads=cfg.w8_threads,
            stall=cfg.stall,
            drain_deadline=cfg.w8_drain_deadline,
            warm_up_deadline=cfg.warm_up_deadline,
        )

    servers: dict[str, streams.Server] = {}
    skipped_live: dict[str, str] = {}
    if (not only or only & {"w11", "w12"}) and "LiveChannel" not in unsupported:
        servers["ours"] = streams.Server("ours", "pgpubsub", impls[0], impls[0].python)
        with_eventstream = not (args.smoke or args.no_eventstream) or args.eventstream
        if with_eventstream:
            try:
                why = streams.redis_answers()
                if why:
                    raise BenchError(why)
                es_python = streams.ensure_es_venv(console.print)
            except BenchError as exc:
                skipped_live["django-eventstream"] = str(exc)
                console.print(f"skipped: django-eventstream in workloads 11 and 12 ({exc})")
            else:
                servers["eventstream"] = streams.Server(
                    "eventstream", "django-eventstream 5.x", impls[0], es_python
                )

    steps = plan(cfg, impls, only, unsupported, w8, servers)
    by_key = {impl.key: impl for impl in impls}
    # django-eventstream's measurements use our database (its producer's rows).
    by_key["eventstream"] = impls[0]
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    failures: list[str] = []
    theirs_notify_durable_failed = False
    started = time.time()
    # The commit measured is the one checked out when the run starts.
    commit = git_commit()
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("starting", total=len(steps))
            for rnd, (name, key, label, fn) in steps:
                if name == "w3_notify_durable" and key == "theirs" and theirs_notify_durable_failed:
                    # It delivered nothing in round 1; waiting out its deadline again
                    # would only make the run longer.
                    progress.advance(task)
                    continue
                title = f"round {rnd + 1}/{cfg.rounds} {label} [{key}]"
                progress.update(task, description=title)

                def tick(done: int, total: int, title: str = title) -> None:
                    progress.update(task, description=f"{title} {done:,}/{total:,}")

                step_started = time.monotonic()
                try:
                    result = fn(tick)
                except (BenchError, psycopg.Error) as exc:
                    failures.append(f"{title}: {exc}")
                    progress.console.print(f"[red]{title} failed:[/] {exc}")
                    progress.advance(task)
                    continue
                result["round"] = rnd + 1
                result["seconds"] = round(time.monotonic() - step_started, 2)
                # Leave nothing behind for autovacuum to work on during the
                # next measurement, which may be the other library's (that
                # one settles the server before it starts).
                truncate(by_key[key], *ALL_TABLES, quiet=False)
                if not console.is_terminal:
                    # No live bar in a log file: one line per measurement instead.
                    progress.console.print(f"{title}: {_brief(result)}")
                results.setdefault(name, {}).setdefault(key, []).append(result)
                if name == "w3_notify_durable" and key == "theirs" and result.get("handled") == 0:
                    theirs_notify_durable_failed = True
                if key == "ours" and (
                    result.get("lost")
                    or result.get("duplicated")
                    or result.get("behind")
                    or result.get("out_of_order")
                ):
                    failures.append(
                        f"{title}: ours lost {result.get('lost', 0)} and duplicated "
                        f"{result.get('duplicated', 0)} events"
                        + (
                            f", {result['out_of_order']} out of order"
                            if result.get("out_of_order")
                            else ""
                        )
                        + (
                            f", and had not handled {result['behind']} when its deadline ran out"
                            if result.get("behind")
                            else ""
                        )
                    )
                progress.advance(task)
            progress.update(task, description="done")
    finally:
        for impl in impls:
            try:
                drop_database(server, f"{prefix}_{impl.key}")
            except psycopg.Error as exc:
                console.print(f"could not drop {prefix}_{impl.key}: {exc}")

    figures = report.summarise(results)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit,
        "command": "BENCH_SMOKE=1 make bench"
        if args.smoke
        else "make bench" + (f' BENCH_ARGS="{" ".join(argv)}"' if argv else ""),
        "server": server_label(server),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "smoke": args.smoke,
        "config": cfg.__dict__,
        "versions": {impl.key: versions(impl) for impl in impls},
        "pgbench": writes.pgbench_version(pgbench) if pgbench else None,
        "skipped": {
            **{channel: why for channel, why in unsupported.items()},
            **skipped_live,
        },
        "eventstream": _eventstream_version(servers),
        "asgi_server": {
            "uvicorn": os.environ.get("BENCH_UVICORN", "standard"),
            "gc": os.environ.get("BENCH_SERVER_GC", "tuned"),
        },
        "duration_s": round(time.time() - started),
    }
    table = Table(title=f"pgpubsub vs django-pgpubsub 1.3.1 ({meta['date']}, {meta['server']})")
    for header in report.headers(with_theirs):
        table.add_column(header, no_wrap=header in ("figure", "ratio", "target"))
    for row in report.rows(figures, with_theirs):
        style = "red" if "MISSED" in row else None
        table.add_row(*row, style=style)
    console.print(table)
    console.print(
        "lost/dup: events lost / processed twice, summed over the rounds. Ratios are of "
        f"medians over {cfg.rounds} round(s) of this one run."
    )
    live_figures = livereport.summarise(results)
    if live_figures:
        live_table = Table(title="Live subscriptions and browser streams (issues 14 and 16)")
        for header in livereport.headers():
            live_table.add_column(header, no_wrap=header in ("figure", "target"))
        for row in livereport.rows(live_figures):
            live_table.add_row(*row, style="red" if "MISSED" in row else None)
        console.print(live_table)
        for note in livereport.notes(live_figures):
            console.print(f"  {note}")
    for note in notes(figures, meta):
        console.print(f"  {note}")

    stem = "smoke" if args.smoke else "latest"
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": meta,
        "figures": report.as_dicts(figures),
        "live_figures": livereport.as_dicts(live_figures),
        "runs": results,
        "failures": failures,
    }
    json_path = RESULTS / f"{stem}.json"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    png_path = RESULTS / f"{stem}.png"
    chart.draw(figures, png_path, chart_title(meta, smoke=args.smoke))
    console.print(f"wrote {json_path.relative_to(REPO)} and {png_path.relative_to(REPO)}")
    if args.publish and not args.smoke:
        publish(png_path, figures, meta, with_theirs, live_figures)
        console.print("published to docs/_static/bench.png and docs/benchmarks.rst")
    for failure in failures:
        console.print(f"[red]FAILED[/] {failure}")
    return 1 if failures else 0


def notes(figures: list[report.Figure], meta: dict[str, Any]) -> list[str]:
    """The lines under the table: each figure's note, then what was skipped and why."""
    out = [f"{fig.workload} {fig.label}: {fig.note}" for fig in figures if fig.note]
    out += [f"skipped: {channel} ({why})" for channel, why in meta.get("skipped", {}).items()]
    return out


def _list_table(table: list[list[str]]) -> list[str]:
    """An RST list-table of ``table`` (its first row is the header)."""
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in table:
        # A lone "-" would start a nested bullet list in a list-table cell.
        cells = [("n/a" if cell == "-" else cell.replace("*", r"\*")) or " " for cell in row]
        lines.append(f"   * - {cells[0]}")
        lines.extend(f"     - {cell}" for cell in cells[1:])
    return lines


def _eventstream_version(servers: dict[str, streams.Server]) -> str | None:
    server = servers.get("eventstream")
    if server is None:
        return None
    out = subprocess.run(
        [
            str(server.python),
            "-c",
            "import importlib.metadata as m; print(m.version('django-eventstream'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or None


def _writer_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise BenchError(
            f"--w8-writers {text!r}: give pgbench client counts separated by commas, e.g. 1,8,32,64"
        )
    return counts


def _brief(result: dict[str, Any]) -> str:
    shown = {k: v for k, v in result.items() if k not in ("round", "commits", "t_start", "t_end")}
    return ", ".join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
        for key, value in shown.items()
    )


def chart_title(meta: dict[str, Any], *, smoke: bool) -> str:
    title = f"pgpubsub vs django-pgpubsub 1.3.1 — {meta['date'][:10]}, {meta['cores']} cores, "
    title += f"medians of {meta['config']['rounds']} round(s)"
    return title + (" (SMOKE: small sizes)" if smoke else "")


def publish(
    png: Path,
    figures: list[report.Figure],
    meta: dict[str, Any],
    theirs: bool,
    live: list[report.Figure] | None = None,
) -> None:
    """Copy the chart into docs/_static and the tables into docs/benchmarks.rst."""
    static = DOCS / "_static"
    static.mkdir(exist_ok=True)
    shutil.copyfile(png, static / "bench.png")
    lines = [
        BEGIN_MARK,
        "",
        f"Run of {meta['date']} on commit ``{meta['commit']}``, {meta['server']}, "
        f"{meta['cores']} cores, Python {meta['python']}; medians of "
        f"{meta['config']['rounds']} rounds; command: ``{meta['command']}``.",
        "",
        *_list_table([report.headers(theirs), *report.rows(figures, theirs)]),
    ]
    published = notes(figures, meta)
    if published:
        lines += ["", *[f"- {note}" for note in published]]
    if live:
        lines += ["", "Live subscriptions and browser streams (workloads 9 to 12):", ""]
        lines += _list_table([livereport.headers(), *livereport.rows(live)])
        lines += ["", *[f"- {note}" for note in livereport.notes(live)]]
    lines += ["", END_MARK]
    page = DOCS / "benchmarks.rst"
    text = page.read_text()
    begin, end = text.index(BEGIN_MARK), text.index(END_MARK) + len(END_MARK)
    page.write_text(text[:begin] + "\n".join(lines) + text[end:])


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)
