"""The PNG chart of a benchmark run (matplotlib, from the ``bench`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from report import Figure

OURS_COLOR = "#2b6cb0"
THEIRS_COLOR = "#a0aec0"
BARE_COLOR = "#48bb78"
CEILING_COLOR = "#ed8936"


def draw(figures: list[Figure], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_key = {fig.key: fig for fig in figures}
    writes = _writes_series(figures)
    fig = plt.figure(figsize=(12, 12 if writes else 8))
    grid = fig.add_gridspec(3 if writes else 2, 2)
    axes = [[fig.add_subplot(grid[row, col]) for col in range(2)] for row in range(2)]
    fig.suptitle(title, fontsize=11)

    _bars(
        axes[0][0],
        "Throughput (events/s, higher is better)",
        [
            ("1 broadcast\ntrigger", by_key["w1_broadcast_trigger"]),
            ("2 durable\ntrigger, 2 w.", by_key["w2_durable_trigger"]),
            ("3 notify()\nbroadcast", by_key["w3_notify_broadcast"]),
            ("3 notify()\ndurable", by_key["w3_notify_durable"]),
            ("6 drain\nsmall", by_key["w6_drain_small"]),
            ("6 drain\nbig", by_key["w6_drain_big"]),
        ],
        bare=True,
    )
    modes = ["broadcast", "durable"]
    if by_key["w4_latency_retained_p50"].ours is not None:
        modes.append("retained")
    _bars(
        axes[0][1],
        "Latency at 200 events/s (ms, lower is better; log scale)",
        [
            (f"{mode}\n{q}", by_key[f"w4_latency_{mode}_{q}"])
            for mode in modes
            for q in ("p50", "p99")
        ],
        log=True,
        limits=[2, 10] * len(modes),
    )
    write_items = [
        ("broadcast\ntrigger", by_key["w5_write_broadcast"]),
        ("durable\ntrigger", by_key["w5_write_durable"]),
    ]
    if "w5_write_retained" in by_key:
        write_items.append(("retained\ntrigger", by_key["w5_write_retained"]))
    _bars(
        axes[1][0],
        "5 Write path: time / time with no trigger (lower is better)",
        write_items,
        limits=[3, 4, 4][: len(write_items)],
    )
    _bars(
        axes[1][1],
        "7 Idle CPU (% core) and RSS growth on big drain (MB)",
        [
            ("idle CPU %", by_key["w7_idle_cpu"]),
            ("RSS growth MB", by_key["w7_rss_growth"]),
        ],
        limits=[1, 20],
    )
    if writes:
        _writes_panel(fig.add_subplot(grid[2, :]), writes)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _bars(
    ax: Any,
    title: str,
    items: list[tuple[str, Figure]],
    *,
    bare: bool = False,
    log: bool = False,
    limits: list[float] | None = None,
) -> None:
    series = [("ours", OURS_COLOR, [f.ours for _, f in items])]
    if any(f.theirs is not None for _, f in items):
        series.append(("django-pgpubsub 1.3.1", THEIRS_COLOR, [f.theirs for _, f in items]))
    if bare and any(f.bare is not None for _, f in items):
        series.append(("bare psycopg loop", BARE_COLOR, [f.bare for _, f in items]))
    if bare and any(f.ceiling is not None for _, f in items):
        series.append(("listener alone", CEILING_COLOR, [f.ceiling for _, f in items]))
    width = 0.8 / len(series)
    for index, (name, color, values) in enumerate(series):
        xs = [i + (index - (len(series) - 1) / 2) * width for i in range(len(items))]
        heights = [v if v is not None else 0 for v in values]
        ax.bar(xs, heights, width=width, label=name, color=color)
        for x, v in zip(xs, values):
            if v is not None:
                text = f"{v:,.0f}" if v >= 100 else f"{v:.2g}" if v < 1 else f"{v:.1f}"
                ax.text(x, v, text, ha="center", va="bottom", fontsize=6)
        for x, (_, f) in zip(xs, items):
            if color == THEIRS_COLOR and f.theirs is None and f.note.startswith("1.3.1 fails"):
                ax.text(x, 0, "fails", ha="center", va="bottom", fontsize=7, rotation=90)
    if limits:
        for i, limit in enumerate(limits):
            ax.hlines(limit, i - 0.45, i + 0.45, colors="#e53e3e", linestyles="dashed")
    ax.set_xticks(range(len(items)))
    ax.set_xticklabels([label for label, _ in items], fontsize=8)
    ax.set_title(title, fontsize=9)
    if log:
        ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)


#: Workload 8's lines: (label, figure key prefix, which value, colour, line style).
WRITES_LINES = [
    ("pgpubsub broadcast", "w8_broadcast", "ours", OURS_COLOR, "-"),
    ("pgpubsub durable", "w8_durable", "ours", "#2c5282", "--"),
    ("pgpubsub retained", "w8_retained", "ours", "#63b3ed", "-."),
    ("1.3.1 broadcast", "w8_broadcast", "theirs", "#718096", "-"),
    ("1.3.1 durable", "w8_durable", "theirs", "#718096", "--"),
    ("floor: pg_notify only", "w8_broadcast", "floor_notify", "#e53e3e", ":"),
    ("floor: to_jsonb into a log", "w8_broadcast", "floor_log", BARE_COLOR, ":"),
    ("limit: log + bare consumer", "w8_broadcast", "floor_consumed", "#38a169", "-"),
]


def _writes_series(figures: list[Figure]) -> dict[str, list[tuple[int, float]]]:
    """Workload 8's ratios to no trigger, per line of :data:`WRITES_LINES`: [(writers, ratio)]."""
    by_key = {fig.key: fig for fig in figures}
    writers = sorted(
        int(fig.key.rsplit("_c", 1)[1]) for fig in figures if fig.key.startswith("w8_reference_c")
    )
    series: dict[str, list[tuple[int, float]]] = {}
    for label, prefix, which, _, _ in WRITES_LINES:
        points = []
        for clients in writers:
            # The floors are the same in every kind's figure; any kind measured has them.
            candidates = [
                by_key.get(f"{p}_c{clients}") for p in (prefix, "w8_durable", "w8_retained")
            ]
            fig = candidates[0]
            if which.startswith("floor"):
                fig = next((c for c in candidates if c is not None and c.floors), None)
            if fig is None:
                continue
            if which == "ours":
                value = fig.ours
            elif which == "theirs":
                value = fig.theirs
            else:
                index = ("floor_notify", "floor_log", "floor_consumed").index(which)
                value = fig.floors[index] if fig.floors else None
            if value is not None:
                points.append((clients, value))
        if points:
            series[label] = points
    return series


def _writes_panel(ax: Any, series: dict[str, list[tuple[int, float]]]) -> None:
    styles = {label: (color, style) for label, _, _, color, style in WRITES_LINES}
    for label, points in series.items():
        color, style = styles[label]
        xs, ys = zip(*points)
        ax.plot(xs, ys, style, color=color, marker="o", markersize=4, label=label)
        ax.text(xs[-1], ys[-1], f" {ys[-1]:.2f}", fontsize=6, va="center", color=color)
    ticks = sorted({x for points in series.values() for x, _ in points})
    # Issue 15's targets, where measured: broadcast, then durable and retained.
    for clients, broadcast, durable in ((1, 0.85, 0.80), (32, 0.60, 0.65)):
        if clients in ticks:
            ax.plot([clients], [broadcast], marker="_", markersize=16, color="#e53e3e")
            ax.plot([clients], [durable], marker="_", markersize=16, color="#dd6b20")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks], fontsize=8)
    ax.set_xlabel(
        "concurrent writers (pgbench clients), one single-row INSERT per transaction", fontsize=8
    )
    highest = max(y for points in series.values() for _, y in points)
    ax.set_ylim(0, max(1.1, highest * 1.05))
    ax.set_title(
        "8 Writes that scale: tx/s with the trigger / tx/s with none (higher is better; "
        "red and orange ticks: targets for broadcast and for durable/retained)",
        fontsize=9,
    )
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
