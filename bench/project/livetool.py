"""Subscriptions and their producer, run in our virtualenv (workloads 9 to 12).

The harness (``bench/fanout.py``, ``bench/streams.py``) starts this script
with the environment of ``benchsite/settings.py``. Each command prints one
JSON object on its last line of output (``fanout`` writes its, larger, to
``--out``); times are ``time.time()`` seconds.

Commands:

``produce``  rows into ``benchapp_liverow`` (the retained ``LiveChannel``)
             at RATE rows/s for SECONDS from its own connection, one
             transaction at a time, at most one every ``--min-period``
             seconds (rows that fall due meanwhile share it); each row's
             commit time is the time its transaction's COMMIT returned
``fanout``   SUBSCRIBERS ``pgpubsub.subscribe(LiveChannel)`` in one process,
             each recording the primary key and the time of every event it
             receives, and whether the event object is the one every other
             subscriber received (decoded once per process)
``ceiling``  the same decoded events (read back from the event log through
             ``subscribe``) fanned out in-process to SUBSCRIBERS bare
             ``asyncio.Queue`` s at paced rates, with the same recording;
             the highest rate within the latency bound (``bench/ramp.py``)
``replay``   write EVENTS rows after a checkpoint, then time
             ``subscribe(LiveChannel, since=checkpoint)`` reading them all
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # bench/: ramp.py, pacing.py
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")

TABLE = "benchapp_liverow"
INSERT = (
    f"INSERT INTO {TABLE} (n, label) SELECT g, '' FROM generate_series(%s::int, %s::int) AS g "
    "RETURNING id"
)


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- the producer -----------------------------------------------------------------


def cmd_produce(args: argparse.Namespace) -> None:
    """Paced rows into LiveChannel's table (``bench/pacing.py``; no Django)."""
    import pacing

    emit(
        pacing.produce(os.environ["BENCH_DB_URL"], TABLE, args.rate, args.seconds, args.min_period)
    )


# -- recording, the same for subscribers and bare queues ----------------------------


#: One event in SAMPLE (by primary key) is checked for being one object in every subscriber.
SAMPLE = 10


class Recorder:
    """What one subscriber saw: primary keys and arrival times, in arrival order."""

    __slots__ = ("copies", "error", "pks", "ts")

    def __init__(self) -> None:
        self.pks: list[int] = []
        self.ts: list[float] = []
        #: Events whose object differs from the one another subscriber got for the same id.
        self.copies = 0
        self.error: str | None = None

    def record(self, event: Any, canonical: dict[str, Any]) -> None:
        self.ts.append(time.time())
        pk = event.kwargs["new"].pk
        self.pks.append(pk)
        # Decoded once? Checked on one event in SAMPLE: keeping every event
        # alive to compare would leave the collector hundreds of thousands
        # of objects to walk, pauses that a subscriber which lets its events
        # go never has.
        if pk % SAMPLE == 0 and canonical.setdefault(event.id, event) is not event:
            self.copies += 1


def _setup() -> None:
    import django

    django.setup()


# -- fanout: subscribers of one process ----------------------------------------------


async def _fanout(args: argparse.Namespace) -> dict[str, Any]:
    from benchapp.channels import LiveChannel

    import pgpubsub

    recorders = [Recorder() for _ in range(args.subscribers)]
    canonical: dict[str, Any] = {}

    async def consume(subscriber: Any, recorder: Recorder) -> None:
        try:
            async for event in subscriber:
                recorder.record(event, canonical)
                if len(recorder.ts) >= args.expect:
                    return
        except pgpubsub.PgpubsubError as exc:
            recorder.error = f"{type(exc).__name__}: {exc}"

    async with contextlib.AsyncExitStack() as stack:
        subscribers = [
            await stack.enter_async_context(
                pgpubsub.subscribe(LiveChannel, max_queue=args.max_queue)
            )
            for _ in range(args.subscribers)
        ]
        print("READY", flush=True)
        cpu0 = cpu_seconds()
        tasks = [asyncio.create_task(consume(s, r)) for s, r in zip(subscribers, recorders)]
        started = last_change = time.monotonic()
        last_total = 0
        while not all(task.done() for task in tasks):
            await asyncio.sleep(0.1)
            now = time.monotonic()
            total = sum(len(r.ts) for r in recorders)
            if total != last_total:
                last_total, last_change = total, now
            elif (total and now - last_change > args.stall) or now - started > args.deadline:
                break
        cpu = cpu_seconds() - cpu0
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "subscribers": [{"pks": r.pks, "ts": r.ts, "error": r.error} for r in recorders],
        "copies": sum(r.copies for r in recorders),
        "event_objects": len(canonical),
        "sample": SAMPLE,
        "cpu_s": cpu,
    }


def cmd_fanout(args: argparse.Namespace) -> None:
    _setup()
    result = asyncio.run(_fanout(args))
    Path(args.out).write_text(json.dumps(result))
    emit({"out": args.out})


# -- ceiling: the same events, bare queues -------------------------------------------


def _insert_rows(count: int, batch: int = 10_000) -> None:
    from django.db import connection, transaction

    with connection.cursor() as cursor:
        for first in range(1, count + 1, batch):
            with transaction.atomic():
                cursor.execute(INSERT, [first, min(count, first + batch - 1)])


async def _collect(count: int) -> list[Any]:
    """``count`` events of LiveChannel as ``subscribe()`` decodes them."""
    from asgiref.sync import sync_to_async
    from benchapp.channels import LiveChannel

    import pgpubsub

    since = await pgpubsub.acheckpoint()
    await sync_to_async(_insert_rows)(count)
    events: list[Any] = []
    async with pgpubsub.subscribe(LiveChannel, since=since) as subscriber:
        async for event in subscriber:
            events.append(event)
            if len(events) >= count:
                break
    return events


async def _fan(
    events: list[Any], rate: float, seconds: float, subscribers: int, max_queue: int
) -> dict[str, Any]:
    """One step: events at ``rate`` into bare queues; latency from each event's due time."""
    queues: list[asyncio.Queue[Any]] = [asyncio.Queue(max_queue) for _ in range(subscribers)]
    recorders = [Recorder() for _ in range(subscribers)]
    canonical: dict[str, Any] = {}

    async def consume(queue: asyncio.Queue[Any], recorder: Recorder) -> None:
        while True:
            event = await queue.get()
            if event is None:
                return
            recorder.record(event, canonical)

    tasks = [asyncio.create_task(consume(q, r)) for q, r in zip(queues, recorders)]
    total = round(rate * seconds)
    due_at: list[float] = []
    lost = 0
    cpu0 = cpu_seconds()
    t0 = time.time()
    sent = 0
    while sent < total:
        due = min(total, int((time.time() - t0) * rate) + 1)
        while sent < due:
            event = events[sent % len(events)]
            for queue in queues:
                try:
                    queue.put_nowait(event)
                except asyncio.QueueFull:
                    lost += 1
            due_at.append(t0 + sent / rate)
            sent += 1
        await asyncio.sleep(max(0.0, t0 + sent / rate - time.time()))
    for queue in queues:
        await queue.put(None)
    await asyncio.gather(*tasks)
    cpu = cpu_seconds() - cpu0
    delays: list[float] = []
    if not lost:
        for recorder in recorders:
            delays.extend(t - d for t, d in zip(recorder.ts, due_at))
    return {"lost": lost, "cpu_s": cpu, **_quantiles(delays)}


def _quantiles(delays: list[float]) -> dict[str, float | None]:
    if not delays:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    delays.sort()

    def at(q: float) -> float:
        return 1000 * delays[min(len(delays) - 1, int(q * (len(delays) - 1) + 0.5))]

    return {"p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": 1000 * delays[-1]}


def cmd_ceiling(args: argparse.Namespace) -> None:
    import ramp

    _setup()
    events = asyncio.run(_collect(args.events))

    def measure(rate: float) -> dict[str, Any]:
        return asyncio.run(_fan(events, rate, args.seconds, args.subscribers, args.max_queue))

    best, steps = ramp.search(
        measure, start=args.start, bound_ms=args.bound_ms, ceiling=args.top, refine=args.refine
    )
    emit({"rate": best, "steps": ramp.as_dicts(steps), "events": len(events)})


# -- replay ------------------------------------------------------------------------


async def _replay(count: int) -> dict[str, Any]:
    from asgiref.sync import sync_to_async
    from benchapp.channels import LiveChannel

    import pgpubsub

    since = await pgpubsub.acheckpoint()
    await sync_to_async(_insert_rows)(count)
    pks: list[int] = []
    tenth = max(1, count // 10)
    marks: dict[str, float] = {}
    cpu0 = cpu_seconds()
    started = time.perf_counter()
    async with pgpubsub.subscribe(LiveChannel, since=since) as subscriber:
        async for event in subscriber:
            pks.append(event.kwargs["new"].pk)
            done = len(pks)
            if done == 1:
                marks["first_event"] = time.perf_counter()
            if done == tenth:
                marks["first_tenth"] = time.perf_counter()
            elif done == count - tenth:
                marks["last_tenth_from"] = time.perf_counter()
            if done >= count:
                break
    ended = time.perf_counter()
    seconds = ended - started
    first = marks.get("first_tenth")
    last_from = marks.get("last_tenth_from")
    return {
        "events": count,
        "received": len(pks),
        "lost": len(set(range(1, count + 1)) - set(pks)),
        "duplicated": len(pks) - len(set(pks)),
        "out_of_order": sum(1 for a, b in itertools.pairwise(pks) if b <= a),
        "rate": len(pks) / seconds if seconds > 0 else None,
        # From the first event: the rate of reading, without connecting.
        "first_tenth_rate": (tenth - 1) / (first - marks["first_event"])
        if first and first > marks["first_event"]
        else None,
        "last_tenth_rate": tenth / (ended - last_from) if last_from and ended > last_from else None,
        "cpu_s": cpu_seconds() - cpu0,
        "seconds": seconds,
        # From subscribe() to the first event: connecting, placing, the first read.
        "first_event_s": marks["first_event"] - started if "first_event" in marks else None,
    }


def cmd_replay(args: argparse.Namespace) -> None:
    _setup()
    emit(asyncio.run(_replay(args.events)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("produce")
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--min-period", type=float, default=0.002)
    p = sub.add_parser("fanout")
    p.add_argument("--subscribers", type=int, required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--max-queue", type=int, default=1000)
    p.add_argument("--stall", type=float, default=5.0)
    p.add_argument("--deadline", type=float, default=300.0)
    p.add_argument("--out", required=True)
    p = sub.add_parser("ceiling")
    p.add_argument("--subscribers", type=int, required=True)
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--start", type=float, required=True)
    p.add_argument("--top", type=float, required=True)
    p.add_argument("--refine", type=int, default=3)
    p.add_argument("--bound-ms", type=float, default=50.0)
    p.add_argument("--max-queue", type=int, default=1000)
    p = sub.add_parser("replay")
    p.add_argument("--events", type=int, required=True)
    args = parser.parse_args()
    {
        "produce": cmd_produce,
        "fanout": cmd_fanout,
        "ceiling": cmd_ceiling,
        "replay": cmd_replay,
    }[args.command](args)


if __name__ == "__main__":
    main()
