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
    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
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
    _bars(
        axes[0][1],
        "Latency at 200 events/s (ms, lower is better; log scale)",
        [
            ("broadcast\np50", by_key["w4_latency_broadcast_p50"]),
            ("broadcast\np99", by_key["w4_latency_broadcast_p99"]),
            ("durable\np50", by_key["w4_latency_durable_p50"]),
            ("durable\np99", by_key["w4_latency_durable_p99"]),
        ],
        log=True,
        limits=[2, 10, 2, 10],
    )
    _bars(
        axes[1][0],
        "5 Write path: time / time with no trigger (lower is better)",
        [
            ("broadcast\ntrigger", by_key["w5_write_broadcast"]),
            ("durable\ntrigger", by_key["w5_write_durable"]),
        ],
        limits=[3, 4],
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
            elif color == THEIRS_COLOR:
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
