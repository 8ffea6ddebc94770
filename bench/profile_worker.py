"""Profile our worker (or producer) on one benchmark workload with py-spy.

Usage (needs ``DATABASE_URL``, and py-spy: ``.venv/bin/pip install py-spy``)::

    .venv/bin/python bench/profile_worker.py w1            # broadcast trigger, worker profiled
    .venv/bin/python bench/profile_worker.py w2            # durable trigger, one worker profiled
    .venv/bin/python bench/profile_worker.py w3            # notify() broadcast, worker profiled
    .venv/bin/python bench/profile_worker.py w3-producer   # notify() broadcast, producer profiled
    .venv/bin/python bench/profile_worker.py w6            # drain of a 100,000-event backlog

It runs the workload once against pgpubsub in a scratch database
(``bench_profile``), samples the process with ``py-spy record --format raw``
and prints the functions with the largest inclusive and self share of the
samples. The raw collapsed stacks are kept in ``bench/.work/profile-*.txt``
(open them in speedscope or feed them to flamegraph.pl).
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from harness import (
    WORK,
    Impl,
    drop_database,
    prepare_project,
    recreate_database,
    server_url,
    truncate,
    wait_for,
)
from workloads import ALL_TABLES, MESSAGE_CHANNELS, ROW_CHANNELS, Config

PROJECT = Path(__file__).resolve().parent / "project"


def main(argv: list[str]) -> int:
    what = argv[0] if argv else "w1"
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    server = server_url()
    impl = Impl("ours", "pgpubsub", Path(sys.executable), "")
    impl.db_url = recreate_database(server, "bench_profile")
    try:
        prepare_project(impl)
        return profile(impl, what, py_spy, Config())
    finally:
        drop_database(server, "bench_profile")


def profile(impl: Impl, what: str, py_spy: str, cfg: Config) -> int:
    if what.startswith("w3"):
        channel, kind = MESSAGE_CHANNELS["broadcast"]
        producer = ["notify", "--mode", "broadcast"]
    else:
        mode = "durable" if what == "w2" else "broadcast"
        channel, kind, _ = ROW_CHANNELS[mode]
        producer = ["bulk", "--mode", mode]
    producer += ["--n", str(cfg.events), "--batch", str(cfg.batch), "--workers", "1"]
    out = WORK / f"profile-{what}.txt"
    truncate(impl, *ALL_TABLES)
    events = cfg.events
    if what == "w6":
        # The backlog is written before the worker starts, as in workload 6.
        events = cfg.backlog_big
        channel, kind, table = ROW_CHANNELS["durable"]
        with impl.connect() as conn:
            conn.execute(
                f"INSERT INTO {table} (n, label) "  # type: ignore[arg-type]
                "SELECT g, '' FROM generate_series(1, %s) AS g",
                [events],
            )
        producer = []
    manage = [str(impl.python), str(PROJECT / "manage.py"), "listen", "--worker"]
    manage += ["--loglevel", "warning", "--channels", channel]
    record = [py_spy, "record", "--format", "raw", "--rate", "250", "-o", str(out), "--"]
    profiled_worker = not what.endswith("producer")
    worker_cmd = record + manage if profiled_worker else manage
    worker = subprocess.Popen(worker_cmd, env=impl.env(), cwd=PROJECT, start_new_session=True)
    try:
        if producer:
            tool = [str(impl.python), str(PROJECT / "benchtool.py"), *producer]
            if not profiled_worker:
                tool = record + tool
            subprocess.run(tool, env=impl.env(), cwd=PROJECT, check=True, stdout=subprocess.DEVNULL)
        tally = wait_for(impl, kind, events, stall=cfg.stall, deadline=cfg.deadline)
        print(f"handled {tally.distinct}, lost {tally.lost}, duplicated {tally.duplicated}")
    finally:
        # py-spy forwards nothing: stop the worker itself, py-spy then writes its file.
        children = subprocess.run(
            ["pgrep", "-g", str(worker.pid), "-f", "manage.py listen"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        for pid in children:
            if int(pid) != worker.pid:
                os.kill(int(pid), signal.SIGTERM)
        if not profiled_worker or not children:
            worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    # py-spy writes the profile as it exits, and it has exited by now.
    if not out.exists():
        raise SystemExit(f"py-spy wrote no profile to {out}")
    summarise(out)
    return 0


def summarise(path: Path, top: int = 25) -> None:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [_short(frame) for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    print(f"\n{total} samples in {path}")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"\n-- top {top} by {title} share")
        for frame, count in counter.most_common(top):
            print(f"{100 * count / total:5.1f}%  {frame}")


def _short(frame: str) -> str:
    # "function (path/to/module.py:123)" -> "function (module.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(where).parts
    return f"{name} ({'/'.join(parts[-2:])})"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
