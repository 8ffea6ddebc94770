"""Summaries of the rounds: the figures, their ratios and the targets of issues 6 and 15."""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from collections.abc import Callable
from typing import Any

OURS = "ours"
THEIRS = "theirs"
BARE = "bare"
CEILING = "ceiling"


@dataclasses.dataclass
class Figure:
    """One line of the table."""

    key: str
    workload: str
    label: str
    unit: str
    ours: float | None
    theirs: float | None = None
    bare: float | None = None
    #: The listener-alone rate (workloads 1 and 3), drawn beside the bars.
    ceiling: float | None = None
    #: Workload 8: the floors' ratios at the same writers: pg_notify only, log
    #: only, and the limit (the log floor with a bare consumer on its events).
    floors: tuple[float | None, float | None, float | None] | None = None
    #: Workload 8: a target missed, but within 10% of the limit measured beside it.
    at_limit: bool = False
    #: How ``ratio`` is read, e.g. "ours/1.3.1".
    ratio_label: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    #: Lost/duplicated events summed over the rounds, per implementation.
    correctness: dict[str, str] = dataclasses.field(default_factory=dict)
    note: str = ""


def median(runs: list[dict[str, Any]], field: str) -> float | None:
    values = [run[field] for run in runs if run.get(field) is not None]
    return statistics.median(values) if values else None


def paired(a: list[dict[str, Any]], b: list[dict[str, Any]], field: str) -> list[float]:
    """``a``'s ``field`` over ``b``'s, for each round in which both were measured."""
    by_round = {run.get("round"): run.get(field) for run in b}
    ratios = []
    for run in a:
        over = by_round.get(run.get("round"))
        if run.get(field) is not None and over:
            ratios.append(run[field] / over)
    return ratios


def spread(values: list[float]) -> str:
    """``values`` as "median (min-max)", or the one value."""
    if len(values) == 1:
        return f"{values[0]:.2f}x"
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f}x)"


def _div(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def correctness(runs: list[dict[str, Any]]) -> str:
    if not runs or "lost" not in runs[0]:
        return ""
    lost = sum(run["lost"] for run in runs)
    dup = sum(run["duplicated"] + run.get("unexpected", 0) for run in runs)
    return f"{lost}/{dup}"


def all_ok(runs: list[dict[str, Any]]) -> bool:
    return all(
        run.get("lost", 0) == 0
        and run.get("duplicated", 0) == 0
        and run.get("unexpected", 0) == 0
        and run.get("behind", 0) == 0
        for run in runs
    )


def summarise(results: dict[str, dict[str, list[dict[str, Any]]]]) -> list[Figure]:
    """Turn the per-round measurements into the figures of the table."""
    figures: list[Figure] = []

    def runs(workload: str, impl: str) -> list[dict[str, Any]]:
        return results.get(workload, {}).get(impl, [])

    def at_least(value: float | None, bound: float) -> bool | None:
        return None if value is None else value >= bound

    def at_most(value: float | None, bound: float) -> bool | None:
        return None if value is None else value <= bound

    def throughput(
        key: str,
        workload: str,
        label: str,
        bound: float,
        bare: bool = False,
        against_ceiling: bool = False,
    ) -> None:
        ours, theirs = runs(key, OURS), runs(key, THEIRS)
        o, t = median(ours, "rate"), median(theirs, "rate")
        ratio = _div(o, t)
        fig = Figure(
            key=key,
            workload=workload,
            label=label,
            unit="events/s",
            ours=o,
            theirs=t,
            bare=median(runs(BARE, OURS), "rate") if bare else None,
            ratio_label="ours/1.3.1",
            ratio=ratio,
            target=f">= {bound:g}x",
            met=at_least(ratio, bound) if all_ok(ours) else False,
            correctness={OURS: correctness(ours), THEIRS: correctness(theirs)},
        )
        if bare:
            fig.correctness[BARE] = correctness(runs(BARE, OURS))
            if fig.bare and o:
                fig.note = f"ours = {o / fig.bare:.2f} x bare loop"
            # Issue 6 puts 3.5 x 1.3.1 at about the bare loop's rate; this
            # shows how far that holds in this run.
            bare_to_theirs = paired(runs(BARE, OURS), theirs, "rate")
            if bare_to_theirs:
                fig.note = (fig.note + "; " if fig.note else "") + (
                    f"bare loop/1.3.1 per round {spread(bare_to_theirs)}"
                )
        per_round = paired(ours, theirs, "rate")
        if len(per_round) > 1:
            fig.note = (fig.note + "; " if fig.note else "") + (
                f"ours/1.3.1 per round {spread(per_round)}"
            )
        ceiling_runs = runs(CEILING, OURS) if against_ceiling else []
        fig.ceiling = median(ceiling_runs, "rate")
        # Against the listener alone, round by round: the machine's speed
        # drifts between rounds, and a ratio of medians taken from different
        # rounds would compare a fast round with a slow one.
        alone = paired(ceiling_runs, theirs, "rate")
        if alone:
            # The most any worker could reach, as a multiple of 1.3.1.
            fig.note = (fig.note + "; " if fig.note else "") + (
                f"listener alone/1.3.1 per round {spread(alone)}"
            )
        to_ceiling = paired(ours, ceiling_runs, "rate")
        if to_ceiling:
            fig.note = (fig.note + "; " if fig.note else "") + (
                f"ours/listener alone per round {spread(to_ceiling)}"
            )
        if theirs and not all_ok(theirs):
            fig.note = (fig.note + "; " if fig.note else "") + "1.3.1 lost or duplicated events"
        figures.append(fig)

    throughput(
        "w1_broadcast_trigger",
        "1",
        "broadcast TriggerChannel, 1 worker",
        3.5,
        bare=True,
        against_ceiling=True,
    )
    throughput("w2_durable_trigger", "2", "durable TriggerChannel, 2 workers", 20)
    throughput("w3_notify_broadcast", "3", "notify(), broadcast channel", 3.5, against_ceiling=True)
    if runs(CEILING, OURS):
        figures.append(
            Figure(
                key="ceiling",
                workload="1, 3",
                label="listener alone: its ORM insert, no notifications",
                unit="events/s",
                ours=median(runs(CEILING, OURS), "rate"),
                correctness={OURS: correctness(runs(CEILING, OURS))},
            )
        )

    ours, theirs = runs("w3_notify_durable", OURS), runs("w3_notify_durable", THEIRS)
    theirs_works = bool(theirs) and all_ok(theirs) and not any(r["timed_out"] for r in theirs)
    figures.append(
        Figure(
            key="w3_notify_durable",
            workload="3",
            label="notify(), durable channel",
            unit="events/s",
            ours=median(ours, "rate"),
            theirs=median(theirs, "rate") if theirs_works else None,
            ratio_label="ours/1.3.1",
            ratio=_div(median(ours, "rate"), median(theirs, "rate")) if theirs_works else None,
            target="works",
            met=bool(ours) and all_ok(ours),
            correctness={OURS: correctness(ours), THEIRS: correctness(theirs)},
            note="" if theirs_works or not theirs else "1.3.1 fails: delivers nothing",
        )
    )

    for mode in ("broadcast", "durable", "retained"):
        key = f"w4_latency_{mode}"
        ours, theirs = runs(key, OURS), runs(key, THEIRS)
        for field, bound in (("p50_ms", 2.0), ("p99_ms", 10.0)):
            o, t = median(ours, field), median(theirs, field)
            figures.append(
                Figure(
                    key=f"{key}_{field[:3]}",
                    workload="4",
                    label=f"latency {mode}, {field[:3]} @ 200/s",
                    unit="ms",
                    ours=o,
                    theirs=t,
                    ratio_label="1.3.1/ours",
                    ratio=_div(t, o),
                    target=f"<= {bound:g} ms",
                    met=at_most(o, bound) if all_ok(ours) else False,
                    correctness={OURS: correctness(ours), THEIRS: correctness(theirs)},
                )
            )

    for mode, bound in (("broadcast", 3.0), ("durable", 4.0), ("retained", 4.0)):
        ours, theirs = runs("w5_write_path", OURS), runs("w5_write_path", THEIRS)
        if mode == "retained" and median(ours, "retained_x") is None:
            continue  # not measured: no retention in the installed pgpubsub
        field = f"{mode}_x"
        o, t = median(ours, field), median(theirs, field)
        figures.append(
            Figure(
                key=f"w5_write_{mode}",
                workload="5",
                label=f"write path, {mode} trigger (x no trigger)",
                unit="x",
                ours=o,
                theirs=t,
                ratio_label="1.3.1/ours",
                ratio=_div(t, o),
                target=f"<= {bound:g}x",
                met=at_most(o, bound),
            )
        )

    small, big = runs("w6_drain_small", OURS), runs("w6_drain_big", OURS)
    small_t, big_t = runs("w6_drain_small", THEIRS), runs("w6_drain_big", THEIRS)
    for key, label, o_runs, t_runs in (
        ("w6_drain_small", "drain rate, small backlog", small, small_t),
        ("w6_drain_big", "drain rate, big backlog", big, big_t),
    ):
        o, t = median(o_runs, "rate"), median(t_runs, "rate")
        figures.append(
            Figure(
                key=key,
                workload="6",
                label=label,
                unit="events/s",
                ours=o,
                theirs=t,
                ratio_label="ours/1.3.1",
                ratio=_div(o, t),
                correctness={OURS: correctness(o_runs), THEIRS: correctness(t_runs)},
            )
        )
    o_keep = _div(median(big, "rate"), median(small, "rate"))
    t_keep = _div(median(big_t, "rate"), median(small_t, "rate"))
    figures.append(
        Figure(
            key="w6_drain_kept",
            workload="6",
            label="big-backlog rate / small-backlog rate",
            unit="x",
            ours=o_keep,
            theirs=t_keep,
            target=">= 0.75x",
            met=at_least(o_keep, 0.75) if all_ok(small) and all_ok(big) else False,
        )
    )

    idle_o, idle_t = runs("w7_idle", OURS), runs("w7_idle", THEIRS)
    figures.append(
        Figure(
            key="w7_idle_cpu",
            workload="7",
            label="idle worker CPU",
            unit="% core",
            ours=median(idle_o, "cpu_pct"),
            theirs=median(idle_t, "cpu_pct"),
            target="< 1%",
            met=_below(median(idle_o, "cpu_pct"), 1.0),
        )
    )
    figures.append(
        Figure(
            key="w7_rss_growth",
            workload="7",
            label="worker RSS growth, big drain",
            unit="MB",
            ours=median(big, "rss_growth_mb"),
            theirs=median(big_t, "rss_growth_mb"),
            target="< 20 MB",
            met=_below(median(big, "rss_growth_mb"), 20.0),
        )
    )
    figures += writes_figures(results)
    return figures


#: Issue 15's targets for workload 8: (kind, writers) -> the least tps / no-trigger tps.
W8_TARGETS = {
    ("broadcast", 1): 0.85,
    ("durable", 1): 0.80,
    ("retained", 1): 0.80,
    ("broadcast", 32): 0.60,
    ("durable", 32): 0.65,
    ("retained", 32): 0.65,
}
W8_KINDS = ("broadcast", "durable", "retained")
#: A workload 8 target the limit itself misses is judged as "at the limit"
#: when ours reaches this share of the limit, measured in the same run.
LIMIT_SHARE = 0.9
#: Where the latency and catch-up rows are taken, if measured (else the most writers).
W8_LATENCY_WRITERS = 32


def writes_figures(results: dict[str, dict[str, list[dict[str, Any]]]]) -> list[Figure]:
    """Workload 8: tps with each trigger over tps with none, per writers, paired by round."""

    def runs(variant: str, impl: str, clients: int) -> list[dict[str, Any]]:
        every = results.get(f"w8_{variant}", {}).get(impl, [])
        return [run for run in every if run.get("clients") == clients]

    reference_runs = results.get("w8_reference", {}).get(OURS, [])
    writers = sorted({run["clients"] for run in reference_runs})
    if not writers:
        return []
    # The reference runs first and last of each (round, writers), and between
    # every few variants: each variant is compared with the mean of the two
    # references that bracket it (by position in the round), since the
    # machine's speed drifts over a round. Results without positions fall
    # back to the mean of the round's references.
    references: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for run in sorted(reference_runs, key=lambda run: run.get("position") or 0):
        references.setdefault((run["round"], run["clients"]), []).append(run)

    def bracket(run: dict[str, Any], clients: int) -> list[float]:
        """The tps of the references next to ``run`` in its round, else all of the round's."""
        every = references.get((run["round"], clients), [])
        position = run.get("position")
        if position is not None:
            placed = [ref for ref in every if ref.get("position") is not None]
            near = [ref for ref in placed if ref["position"] < position][-1:]
            near += [ref for ref in placed if ref["position"] > position][:1]
            if near:
                return [ref["tps"] for ref in near]
        return [ref["tps"] for ref in every]

    def ratios(variant: str, impl: str, clients: int) -> list[float]:
        out = []
        for run in runs(variant, impl, clients):
            reference = bracket(run, clients)
            if reference and run.get("tps") is not None:
                out.append(run["tps"] / statistics.mean(reference))
        return out

    def med(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    figures: list[Figure] = []
    for clients in writers:
        plural = "writer" if clients == 1 else "writers"
        pairs = [
            [ref["tps"] for ref in refs]
            for (_, n), refs in sorted(references.items())
            if n == clients
        ]
        figures.append(
            Figure(
                key=f"w8_reference_c{clients}",
                workload="8",
                label=f"{clients} {plural}: no trigger (the reference)",
                unit="tx/s",
                ours=med([statistics.mean(tps) for tps in pairs]),
                note=_reference_note(pairs),
            )
        )
        floors = (
            med(ratios("floor_notify", OURS, clients)),
            med(ratios("floor_log", OURS, clients)),
            med(ratios("floor_consumed", OURS, clients)),
        )
        limit_runs = runs("floor_consumed", OURS, clients)
        keyed = med(ratios("floor_keyed", OURS, clients))
        document = med(ratios("floor_document", OURS, clients))
        for kind in W8_KINDS:
            ours_runs, theirs_runs = runs(kind, OURS, clients), runs(kind, THEIRS, clients)
            ours_ratios, theirs_ratios = ratios(kind, OURS, clients), ratios(kind, THEIRS, clients)
            o, t = med(ours_ratios), med(theirs_ratios)
            bound = W8_TARGETS.get((kind, clients))
            met = None if bound is None or o is None else o >= bound and all_ok(ours_runs)
            # A target above what the machine allows any consumer is judged
            # against the limit measured beside it (issue 15's rule: within
            # 10%): for durable, the limit that stores durable's document
            # when the run measured it (--w8-bare), since a durable event
            # must be stored in that shape; else the plain limit.
            limit, kind_limit_runs = floors[2], limit_runs
            if kind == "durable" and document is not None:
                limit, kind_limit_runs = document, runs("floor_document", OURS, clients)
            at_limit = bool(
                met is False
                and o is not None
                and limit is not None
                and limit < bound  # type: ignore[operator]
                and o >= LIMIT_SHARE * limit
                and all_ok(ours_runs)
                and all_ok(kind_limit_runs)
            )
            fig = Figure(
                key=f"w8_{kind}_c{clients}",
                workload="8",
                label=f"{clients} {plural}: {kind} trigger, tx/s / no trigger",
                unit="x",
                ours=o,
                theirs=t,
                floors=floors if o is not None or t is not None else None,
                ratio_label="ours/1.3.1",
                ratio=_div(o, t),
                target=f">= {bound:g}x" if bound is not None else "",
                met=met,
                at_limit=at_limit,
                correctness={OURS: correctness(ours_runs), THEIRS: correctness(theirs_runs)},
            )
            parts = []
            if o is not None and floors[2]:
                parts.append(f"ours = {o / floors[2]:.2f} of the limit")
            if o is not None and keyed:
                parts.append(
                    f"limit with the ordered key {keyed:.2f}x, ours = {o / keyed:.2f} of it"
                )
            if kind == "durable" and o is not None and document:
                parts.append(
                    f"limit with durable's document {document:.2f}x, "
                    f"ours = {o / document:.2f} of it"
                )
            bare = med(ratios(f"bare_{kind}", OURS, clients))
            if bare is not None:
                parts.append(f"our trigger with a bare consumer, not our worker: {bare:.2f}x")
            if len(ours_ratios) > 1:
                parts.append(f"ours per round {spread(ours_ratios)}")
            if len(theirs_ratios) > 1:
                parts.append(f"1.3.1 per round {spread(theirs_ratios)}")
            behind = [run["behind"] for run in theirs_runs if run.get("behind")]
            if behind:
                parts.append(
                    f"1.3.1 had not caught up by the deadline in {len(behind)} round(s): "
                    f"{max(behind):,} events behind at most"
                )
            fig.note = "; ".join(parts)
            figures.append(fig)

    at = W8_LATENCY_WRITERS if W8_LATENCY_WRITERS in writers else writers[-1]
    for kind in W8_KINDS:
        ours_runs, theirs_runs = runs(kind, OURS, at), runs(kind, THEIRS, at)
        o, t = median(ours_runs, "p99_ms"), median(theirs_runs, "p99_ms")
        figures.append(
            Figure(
                key=f"w8_{kind}_p99",
                workload="8",
                label=f"{at} writers: {kind}, p99 insert-to-listener",
                unit="ms",
                ours=o,
                theirs=t,
                ratio_label="1.3.1/ours",
                ratio=_div(t, o),
            )
        )
        figures.append(
            Figure(
                key=f"w8_{kind}_catch_up",
                workload="8",
                label=f"{at} writers: {kind}, worker catch-up",
                unit="s",
                ours=_all_or_none(ours_runs, "catch_up_s"),
                theirs=_all_or_none(theirs_runs, "catch_up_s"),
                note=_catch_up_note(kind, writers, runs),
            )
        )
    return figures


def _all_or_none(runs: list[dict[str, Any]], field: str) -> float | None:
    """The median of ``field``, or None unless every run has it (a run that never caught up)."""
    if not runs or any(run.get(field) is None for run in runs):
        return None
    return median(runs, field)


def _catch_up_note(kind: str, writers: list[int], runs: Callable[..., list[dict[str, Any]]]) -> str:
    """Catch-up seconds and the worker's CPU during the burst at every number of writers.

    Catch-up is "late" where a round did not catch up by the deadline; the
    CPU (share of one core) is what the busy worker took from the writers.
    """
    catch_up, cpu = [], []
    for impl, name in ((OURS, "ours"), (THEIRS, "1.3.1")):
        seconds, percent = [], []
        for clients in writers:
            measured = runs(kind, impl, clients)
            value = _all_or_none(measured, "catch_up_s")
            seconds.append("-" if not measured else "late" if value is None else f"{value:.1f}")
            share = median(measured, "worker_cpu_pct")
            percent.append("-" if share is None else f"{share:.0f}")
        if any(cell != "-" for cell in seconds):
            catch_up.append(f"{name} {'/'.join(seconds)}")
            cpu.append(f"{name} {'/'.join(percent)}")
    if not catch_up:
        return ""
    counts = "/".join(str(clients) for clients in writers)
    return (
        f"at {counts} writers, catch-up (s): {', '.join(catch_up)}; "
        f"worker CPU during the burst (% of a core): {', '.join(cpu)}"
    )


def _reference_note(pairs: list[list[float]]) -> str:
    """How far the reference moved: between rounds, and within a round (first vs last run)."""
    means = [statistics.mean(tps) for tps in pairs]
    parts = []
    if len(means) > 1:
        parts.append(f"per round {min(means):,.0f}-{max(means):,.0f} tx/s")
    drift = [abs(tps[0] - tps[-1]) / statistics.mean(tps) for tps in pairs if len(tps) > 1]
    if drift:
        parts.append(
            f"first and last run of a round differ by {100 * statistics.median(drift):.0f}% "
            f"(median), {100 * max(drift):.0f}% at most"
        )
    steps = [
        abs(a - b) / statistics.mean((a, b))
        for tps in pairs
        if len(tps) > 2
        for a, b in itertools.pairwise(tps)
    ]
    if steps:
        parts.append(
            f"neighbouring runs differ by {100 * statistics.median(steps):.0f}% "
            f"(median), {100 * max(steps):.0f}% at most"
        )
    return "; ".join(parts)


def _below(value: float | None, bound: float) -> bool | None:
    return None if value is None else value < bound


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit in ("events/s", "tx/s"):
        return f"{value:,.0f}"
    if unit in ("x", "ratio"):
        return f"{value:.2f}x"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def verdict(fig: Figure) -> str:
    if fig.met is None:
        return "" if not fig.target else "n/a"
    if fig.at_limit:
        return "at limit"
    return "met" if fig.met else "MISSED"


def rows(figures: list[Figure], with_theirs: bool) -> list[list[str]]:
    """The table as strings: what the console table and the docs show."""
    out = []
    for fig in figures:
        if not measured(fig):
            continue
        theirs = fmt(fig.theirs, fig.unit)
        if fig.key == "w3_notify_durable" and fig.note.startswith("1.3.1 fails"):
            theirs = "fails"
        row = [
            fig.workload,
            fig.label,
            fig.unit,
            fmt(fig.ours, fig.unit),
        ]
        if with_theirs:
            row.append(theirs)
        row += [
            fmt(fig.bare, fig.unit) if fig.bare is not None else "",
            "/".join(fmt(floor, "x") for floor in fig.floors) if fig.floors else "",
            f"{fmt(fig.ratio, 'x')} {fig.ratio_label}" if fig.ratio is not None else "",
            fig.target,
            verdict(fig),
            " ".join(f"{k}:{v}" for k, v in fig.correctness.items() if v),
        ]
        out.append(row)
    return out


def headers(with_theirs: bool) -> list[str]:
    cols = ["#", "figure", "unit", "ours"]
    if with_theirs:
        cols.append("1.3.1")
    return [*cols, "bare loop", "floors notify/log/limit", "ratio", "target", "", "lost/dup"]


def measured(fig: Figure) -> bool:
    """Whether the run measured anything for ``fig`` (a workload left out by --only did not)."""
    values = (fig.ours, fig.theirs, fig.bare)
    return any(v is not None for v in values) or any(fig.correctness.values())


def as_dicts(figures: list[Figure]) -> list[dict[str, Any]]:
    return [dataclasses.asdict(fig) for fig in figures]


Formatter = Callable[[float | None, str], str]
