"""The table of workloads 9 to 12: live subscriptions and browser streams (issues 14 and 16).

Its own table because its columns differ from issue 6's: pgpubsub, then
django-eventstream (workloads 11 and 12), then the ceiling (workload 9: the
same decoded events through bare ``asyncio.Queue`` s). Figures are medians
over the rounds; ``lost/dup/order`` sums events lost, delivered twice and
delivered out of commit order over every receiver and round.
"""

from __future__ import annotations

import statistics
from typing import Any

from report import OURS, Figure, fmt, median, verdict

ES = "eventstream"


def _sum(runs: list[dict[str, Any]], field: str) -> int:
    return sum(int(run.get(field) or 0) for run in runs)


def _correctness(runs: list[dict[str, Any]]) -> str:
    if not runs or "lost" not in runs[0]:
        return ""
    return f"{_sum(runs, 'lost')}/{_sum(runs, 'duplicated')}/{_sum(runs, 'out_of_order')}"


def _clean(runs: list[dict[str, Any]]) -> bool:
    return all(
        not run.get("lost") and not run.get("duplicated") and not run.get("out_of_order")
        for run in runs
    )


def _at_most(value: float | None, bound: float, clean: bool = True) -> bool | None:
    return None if value is None else value <= bound and clean


def _at_least(value: float | None, bound: float, clean: bool = True) -> bool | None:
    return None if value is None else value >= bound and clean


def summarise(results: dict[str, dict[str, list[dict[str, Any]]]]) -> list[Figure]:
    figures: list[Figure] = []

    def runs(name: str, impl: str = OURS) -> list[dict[str, Any]]:
        return results.get(name, {}).get(impl, [])

    fan = runs("w9_fanout")
    if fan:
        clean = _clean(fan)
        rate = fan[0]["rate"]
        subs = fan[0]["receivers"]
        where = f"{subs} subscribers @ {rate:g}/s"
        corr = {OURS: _correctness(fan)}
        figures += [
            Figure(
                "w9_p50",
                "9",
                f"fan-out, {where}: p50 commit-to-yield",
                "ms",
                median(fan, "p50_ms"),
                correctness=corr,
            ),
            Figure(
                "w9_p99",
                "9",
                f"fan-out, {where}: p99 commit-to-yield",
                "ms",
                median(fan, "p99_ms"),
                target="<= 20 ms",
                met=_at_most(median(fan, "p99_ms"), 20.0, clean),
                correctness=corr,
            ),
            Figure(
                "w9_listen",
                "9",
                "fan-out: LISTEN (hub) connections of the process",
                "conn.",
                max(run["hub_connections"] for run in fan),
                target="1",
                met=all(run["hub_connections"] == 1 for run in fan),
                note="connections of the subscriber process (pg_stat_activity): "
                + ", ".join(str(run["connections"]) for run in fan),
            ),
            Figure(
                "w9_decoded",
                "9",
                "fan-out: event objects per event (1 = decoded once)",
                "x",
                max(
                    run["event_objects"] / run["events_sampled"]
                    for run in fan
                    if run["events_sampled"]
                ),
                target="1.00x",
                met=all(
                    run["event_object_copies"] == 0
                    and run["event_objects"] == run["events_sampled"]
                    for run in fan
                ),
                note="checked on every 10th event (by key) of every subscriber",
            ),
            Figure(
                "w9_cpu",
                "9",
                "fan-out: subscriber process CPU",
                "% core",
                median(fan, "subscriber_cpu_pct"),
                note=f"the producer's CPU: {fmt(median(fan, 'producer_cpu_pct'))}% of a core",
            ),
        ]
    highest, ceiling = runs("w9_fanout_max"), runs("w9_ceiling")
    if highest or ceiling:
        h, c = median(highest, "rate"), median(ceiling, "rate")
        shares = [
            run["rate"] / over["rate"]
            for run, over in zip(highest, ceiling)
            if run.get("rate") and over.get("rate")
        ]
        share = statistics.median(shares) if shares else None
        figures += [
            Figure(
                "w9_max",
                "9",
                "highest rate with p99 <= 50 ms, nothing lost",
                "events/s",
                h,
                bare=c,
                note=_steps_note("subscribers", highest) + "; " + _steps_note("ceiling", ceiling),
            ),
            Figure(
                "w9_share",
                "9",
                "highest rate / ceiling (bare asyncio.Queues)",
                "x",
                share,
                target=">= 0.5x",
                met=_at_least(share, 0.5),
            ),
        ]
    rep = runs("w10_replay")
    if rep:
        r = median(rep, "rate")
        figures += [
            Figure(
                "w10_rate",
                "10",
                f"replay {rep[0]['events']:,} events from a checkpoint",
                "events/s",
                r,
                target=">= 20,000",
                met=_at_least(r, 20_000, _clean(rep)),
                correctness={OURS: _correctness(rep)},
                note=f"first event after {fmt(median(rep, 'first_event_s'))} s",
            ),
            Figure(
                "w10_key",
                "10",
                "replay: last tenth's rate / first tenth's (reads by key: ~1)",
                "x",
                _ratio(median(rep, "last_tenth_rate"), median(rep, "first_tenth_rate")),
                note=f"first tenth {fmt(median(rep, 'first_tenth_rate'), 'events/s')}/s, "
                f"last tenth {fmt(median(rep, 'last_tenth_rate'), 'events/s')}/s",
            ),
        ]
    figures += _streams(runs)
    return figures


def _streams(runs: Any) -> list[Figure]:
    ours, es = runs("w11_sse"), runs("w11_sse", ES)
    figures: list[Figure] = []
    if ours or es:
        first = (ours or es)[0]
        where = f"{first['clients']:,} clients @ {first['rate']:g}/s"
        corr = {OURS: _correctness(ours), ES: _correctness(es)}
        clean = _clean(ours)

        def fig(key: str, label: str, unit: str, field: str, **kw: Any) -> Figure:
            return Figure(key, "11", label, unit, median(ours, field), median(es, field), **kw)

        figures += [
            fig("w11_p50", f"SSE, {where}: p50 commit-to-client", "ms", "p50_ms", correctness=corr),
            fig(
                "w11_p99",
                f"SSE, {where}: p99 commit-to-client",
                "ms",
                "p99_ms",
                target="<= 100 ms",
                met=_at_most(median(ours, "p99_ms"), 100.0, clean),
                correctness=corr,
            ),
            fig("w11_cpu", "SSE: server CPU", "% core", "server_cpu_pct"),
            fig(
                "w11_kb",
                "SSE: server memory per client",
                "KB",
                "server_kb_per_client",
                target="<= 100 KB",
                met=_at_most(median(ours, "server_kb_per_client"), 100.0),
                note="resident memory once the clients are connected (or its peak while "
                "streaming, if higher) minus before they connected, per client",
            ),
            fig(
                "w11_threads",
                "SSE: server threads",
                "threads",
                "server_threads",
                target="none per client",
                met=None
                if not ours
                else all(
                    run["server_threads"] - run["server_threads_before"] < run["clients"] / 10
                    for run in ours
                ),
            ),
            fig(
                "w11_conns",
                "SSE: server's PostgreSQL connections",
                "conn.",
                "connections",
                target="1 LISTEN",
                met=None if not ours else all(run["hub_connections"] == 1 for run in ours),
            ),
            fig(
                "w11_client_cpu",
                "SSE: the load client's own CPU",
                "% core",
                "client_cpu_pct",
                note="under a core: the load client is not what limits the figures",
            ),
        ]
    slow_o, slow_e = runs("w11_slow"), runs("w11_slow", ES)
    if slow_o or slow_e:
        whole = [run["resumed_whole"] for run in slow_o]
        figures.append(
            Figure(
                "w11_slow",
                "11",
                "SSE slow client: events it never got",
                "events",
                median(slow_o, "lost"),
                median(slow_e, "lost"),
                target="cut off, resumes, 0 lost",
                met=all(whole) if whole else None,
                correctness={OURS: _correctness(slow_o), ES: _correctness(slow_e)},
                note=f"cut off (times, per round): pgpubsub {_list(slow_o, 'cut_off')}, "
                f"django-eventstream {_list(slow_e, 'cut_off')}; the other clients lost "
                f"pgpubsub {_list(slow_o, 'others_lost')}, django-eventstream "
                f"{_list(slow_e, 'others_lost')}",
            )
        )
    col_o, col_e = runs("w12_collapse"), runs("w12_collapse", ES)
    if col_o or col_e:
        figures += [
            Figure(
                "w12_held",
                "12",
                "SSE: highest rate with 0 lost and p99 <= 1 s",
                "events/s",
                median(col_o, "rate"),
                median(col_e, "rate"),
                note=_steps_note("pgpubsub", col_o)
                + "; "
                + _steps_note("django-eventstream", col_e),
            ),
            Figure(
                "w12_collapse",
                "12",
                "SSE: collapse (first rate that lost or passed 1 s)",
                "events/s",
                median(col_o, "collapse_rate"),
                median(col_e, "collapse_rate"),
                target="above django-eventstream's",
                met=_above(median(col_o, "collapse_rate"), median(col_e, "collapse_rate"), col_o),
            ),
        ]
    return figures


def _above(ours: float | None, theirs: float | None, runs: list[dict[str, Any]]) -> bool | None:
    if theirs is None:
        return None
    if ours is None:
        # Ours never collapsed within the rates tried: above, if it was tried higher.
        return bool(runs) and all(run.get("rate") and run["rate"] > theirs for run in runs)
    return ours > theirs


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _list(runs: list[dict[str, Any]], field: str) -> str:
    return "/".join(str(run.get(field, "-")) for run in runs) or "-"


def _steps_note(name: str, runs: list[dict[str, Any]]) -> str:
    """The rates a search tried in its last round, with their p99 and losses."""
    if not runs:
        return f"{name}: not measured"
    steps = runs[-1].get("steps", [])
    tried = ", ".join(
        f"{step['rate']:g}/s p99 {fmt(step['p99_ms'])} ms"
        + (f" lost {step['lost']}" if step["lost"] else "")
        for step in steps
    )
    return f"{name}: {tried}"


def _fmt(value: float | None, unit: str) -> str:
    if value is not None and unit in ("conn.", "threads", "events"):
        return f"{value:,.0f}"
    return fmt(value, unit)


def headers() -> list[str]:
    return [
        "#",
        "figure",
        "unit",
        "pgpubsub",
        "django-eventstream",
        "ceiling",
        "target",
        "",
        "lost/dup/order",
    ]


def rows(figures: list[Figure]) -> list[list[str]]:
    out = []
    for fig in figures:
        out.append(
            [
                fig.workload,
                fig.label,
                fig.unit,
                _fmt(fig.ours, fig.unit),
                _fmt(fig.theirs, fig.unit) if fig.theirs is not None else "",
                fmt(fig.bare, fig.unit) if fig.bare is not None else "",
                fig.target,
                verdict(fig),
                " ".join(f"{'es' if k == ES else k}:{v}" for k, v in fig.correctness.items() if v),
            ]
        )
    return out


def notes(figures: list[Figure]) -> list[str]:
    return [f"{fig.workload} {fig.label}: {fig.note}" for fig in figures if fig.note]


def as_dicts(figures: list[Figure]) -> list[dict[str, Any]]:
    import dataclasses

    return [dataclasses.asdict(fig) for fig in figures]
