"""Producers and the bare-loop baseline, run inside one library's virtualenv.

The harness (``bench/run.py``) starts this script with the interpreter of
the library under test and the environment described in
``benchsite/settings.py``. Each command prints one JSON object on its last
line of output; times are ``time.time()`` seconds, comparable with the
``seen_at`` the listeners record (same machine, same clock).

Commands:

``bulk``    warm the workers up, then ``bulk_create`` N rows, BATCH per transaction
``notify``  warm the workers up, then N ``pgpubsub.notify()`` calls, BATCH per transaction
``paced``   warm the workers up, then insert one row per transaction at RATE rows/s
            and report each row's commit time
``bare``    the baseline: LISTEN with psycopg, one ORM insert per NOTIFY, BATCH
            per transaction, until N events are handled
``bare-produce``  N plain NOTIFYs for ``bare``, BATCH per transaction
``listener-only``  the listeners' own work alone: N calls of the function every
            listener calls (one ORM insert), BATCH per transaction, with no
            notification at all; no worker can handle events faster than this
``floor-consume``  workload 8's limit: the least a consumer on the writers' machine
            can do. Until stopped, claim and delete up to BATCH rows of an event
            table per transaction (one statement) and call the listeners'
            function once per row in that transaction, recording KIND; poll
            every millisecond when the table is empty. ``--ref row``: the log
            floor's rows (``to_jsonb`` of the source row); ``--ref event``:
            pgpubsub's own tables (the source row's id under ``new``)
``unsupported``  the bench channels the installed library cannot declare, and why
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")

import django

django.setup()

import psycopg  # noqa: E402
from benchapp import channels  # noqa: E402
from benchapp.models import (  # noqa: E402
    BroadcastRow,
    DurableRow,
    PlainRow,
    Processed,
    TimedBroadcastRow,
    TimedDurableRow,
    TimedPlainRow,
    TimedRetainedRow,
)
from django.db import connection, transaction  # noqa: E402

import pgpubsub  # noqa: E402

#: --mode -> the model written.
MODELS = {
    "broadcast": BroadcastRow,
    "durable": DurableRow,
    "plain": PlainRow,
    "timed_plain": TimedPlainRow,
    "timed_broadcast": TimedBroadcastRow,
    "timed_durable": TimedDurableRow,
    "retained": TimedRetainedRow,
}
#: --mode -> the kind its listener records (see benchapp/listeners.py).
ROW_KINDS = {
    "broadcast": "broadcast_row",
    "durable": "durable_row",
    "timed_broadcast": "timed_broadcast",
    "timed_durable": "timed_durable",
    "retained": "retained_row",
}
#: Modes whose channel delivers each event to every worker.
BROADCAST_MODES = {"broadcast", "timed_broadcast", "retained"}
MESSAGE_CHANNELS = {
    "broadcast": ("benchapp.channels.BroadcastMessage", "broadcast_msg"),
    "durable": ("benchapp.channels.DurableMessage", "durable_msg"),
}
BARE_CHANNEL = "bench_bare"
BARE_KIND = "bare"
LISTENER_ONLY_KIND = "listener_only"


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)


def reset(tables: list[str]) -> None:
    """Empty the listener table, the source tables and the stored notifications."""
    names = ", ".join(["benchapp_processed", *tables, "pgpubsub_notification"])
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {names} RESTART IDENTITY")


def warm_up(
    probe: Any, kind: str, workers: int, tables: list[str], deadline: float, broadcast: bool
) -> float:
    """Send probe events until every worker has handled one; then reset the tables.

    A broadcast event sent before a worker LISTENs is lost, and django-pgpubsub
    only delivers stored notifications it is told about while listening, so
    the probes are repeated until answered. This also runs each worker's
    whole path once, so the measurement starts warm. Returns the seconds it
    took, or -1 if the workers never answered (the run goes on regardless).

    Before the reset, one last probe must be answered: by every worker on a
    broadcast channel, where each worker handles its events in order, so no
    answer to an earlier probe can land after the reset. On a durable channel
    each probe is answered once, and the reset's TRUNCATE waits for the
    transactions handling probes and empties the outbox of the others.
    """
    started = time.time()
    end = started + deadline

    def workers_answering(**ref: int) -> int:
        return Processed.objects.filter(kind=kind, **ref).values("worker").distinct().count()

    attempt = 0
    while time.time() < end:
        attempt += 1
        probe(attempt)
        wait_until = min(end, time.time() + 1.0)
        while time.time() < wait_until and workers_answering() < workers:
            time.sleep(0.02)
        if workers_answering() >= workers:
            last = probe(attempt + 1)
            needed = workers if broadcast else 1
            while time.time() < end and workers_answering(ref=last) < needed:
                time.sleep(0.02)
            reset(tables)
            return time.time() - started
    # No answer: measure anyway (the harness reports what arrives, if anything).
    print(f"warm-up: no answer on {kind} within {deadline:.0f}s", file=sys.stderr, flush=True)
    reset(tables)
    return -1.0


def row_probe(model: Any) -> Any:
    """A probe that inserts a row; it returns the ``ref`` the listeners record (the pk)."""

    def probe(attempt: int) -> int:
        return int(model.objects.create(n=-attempt).pk)

    return probe


def message_probe(path: str) -> Any:
    """A probe that sends a message; it returns the ``ref`` the listeners record (n)."""

    def probe(attempt: int) -> int:
        with transaction.atomic():
            pgpubsub.notify(path, n=-attempt)
        return -attempt

    return probe


def cmd_bulk(args: argparse.Namespace) -> None:
    model = MODELS[args.mode]
    table = model._meta.db_table
    warm = 0.0
    if args.workers:
        warm = warm_up(
            row_probe(model),
            ROW_KINDS[args.mode],
            args.workers,
            [table],
            args.deadline,
            broadcast=args.mode in BROADCAST_MODES,
        )
    started = time.time()
    for first in range(0, args.n, args.batch):
        rows = [model(n=i) for i in range(first + 1, min(args.n, first + args.batch) + 1)]
        with transaction.atomic():
            model.objects.bulk_create(rows)
    emit({"t_start": started, "t_end": time.time(), "warm_up_s": warm})


def cmd_notify(args: argparse.Namespace) -> None:
    path, kind = MESSAGE_CHANNELS[args.mode]
    warm = warm_up(
        message_probe(path), kind, args.workers, [], args.deadline, args.mode == "broadcast"
    )
    started = time.time()
    for first in range(0, args.n, args.batch):
        with transaction.atomic():
            for i in range(first + 1, min(args.n, first + args.batch) + 1):
                pgpubsub.notify(path, n=i)
    emit({"t_start": started, "t_end": time.time(), "warm_up_s": warm})


def cmd_paced(args: argparse.Namespace) -> None:
    model = MODELS[args.mode]
    warm = warm_up(
        row_probe(model),
        ROW_KINDS[args.mode],
        args.workers,
        [model._meta.db_table],
        args.deadline,
        broadcast=args.mode in BROADCAST_MODES,
    )
    interval = 1.0 / args.rate
    commits: list[tuple[int, float]] = []
    started = time.time()
    start_mono = time.monotonic()
    for i in range(args.n):
        delay = start_mono + i * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        row = model.objects.create(n=i + 1)  # autocommit: the INSERT is its own transaction
        commits.append((row.pk, time.time()))
    emit({"t_start": started, "t_end": time.time(), "warm_up_s": warm, "commits": commits})


def cmd_bare(args: argparse.Namespace) -> None:
    """The ceiling: receive NOTIFYs with bare psycopg and do the listeners' ORM insert.

    No framework: no decoding beyond ``int()``, no channel lookup, no
    savepoints; BATCH events per transaction.
    """
    params = dict(connection.get_connection_params())
    for key in ("cursor_factory", "context", "prepare_threshold", "row_factory"):
        params.pop(key, None)
    listen = psycopg.Connection.connect(**params, autocommit=True)
    listen.execute(f"LISTEN {BARE_CHANNEL}")
    connection.ensure_connection()
    print("READY", flush=True)
    pid = os.getpid()
    handled = 0
    deadline = time.time() + args.deadline
    while handled < args.n and time.time() < deadline:
        batch = list(listen.notifies(timeout=1.0, stop_after=args.batch))
        if not batch:
            continue
        with transaction.atomic():
            for note in batch:
                Processed.objects.create(
                    kind=BARE_KIND, ref=int(note.payload), seen_at=time.time(), worker=pid
                )
        handled += len(batch)
    listen.close()
    emit({"handled": handled})


def cmd_bare_produce(args: argparse.Namespace) -> None:
    started = time.time()
    with connection.cursor() as cursor:
        for first in range(0, args.n, args.batch):
            with transaction.atomic():
                cursor.execute(
                    "SELECT count(pg_notify(%s, g::text)) FROM generate_series(%s, %s) AS g",
                    [BARE_CHANNEL, first + 1, min(args.n, first + args.batch)],
                )
    emit({"t_start": started, "t_end": time.time(), "warm_up_s": 0.0})


def cmd_listener_only(args: argparse.Namespace) -> None:
    from benchapp.listeners import record

    # Warm the connection and the ORM's caches as the workers' probes warm theirs.
    with transaction.atomic():
        for i in range(min(args.batch, args.n)):
            record(LISTENER_ONLY_KIND, -1 - i)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM benchapp_processed WHERE kind = %s", [LISTENER_ONLY_KIND])
    started = time.time()
    for first in range(0, args.n, args.batch):
        with transaction.atomic():
            for i in range(first + 1, min(args.n, first + args.batch) + 1):
                record(LISTENER_ONLY_KIND, i)
    emit({"t_start": started, "t_end": time.time(), "warm_up_s": 0.0})


#: What ``floor-consume`` records for each row it consumes.
FLOOR_CONSUMED_KIND = "floor_consumed"


def cmd_floor_consume(args: argparse.Namespace) -> None:
    """Consume the log floor's events with nothing but one claim per batch and the listener."""
    from benchapp.listeners import record
    from psycopg import sql

    schema, name = args.table.split(".")
    log = sql.Identifier(schema, name)
    ref = {
        "row": sql.SQL("(row->>'id')::bigint"),
        "document": sql.SQL("(row->'new'->>'id')::bigint"),
        "event": sql.SQL("(payload::jsonb->'new'->>'id')::bigint"),
    }[args.ref]
    claim = sql.SQL(
        "DELETE FROM {} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {} LIMIT %s "
        "FOR UPDATE SKIP LOCKED)) RETURNING {}"
    ).format(log, log, ref)
    statement = claim.as_string(None)
    emit({"ready": time.time()})
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement, [args.batch])
            ids = [row[0] for row in cursor.fetchall()]
            for ref in ids:
                record(args.kind, ref)
        if not ids:
            time.sleep(0.001)


def cmd_unsupported(args: argparse.Namespace) -> None:
    emit(dict(channels.UNSUPPORTED))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("unsupported")
    floor = sub.add_parser("floor-consume")
    floor.add_argument("--table", required=True, help="schema.table of the floor's events")
    floor.add_argument("--batch", type=int, default=500)
    floor.add_argument("--kind", default=FLOOR_CONSUMED_KIND, help="what the listener records")
    floor.add_argument("--ref", choices=("row", "document", "event"), default="row")
    for name in ("bulk", "notify", "paced", "bare", "bare-produce", "listener-only"):
        p = sub.add_parser(name)
        p.add_argument("--mode", choices=sorted(MODELS), default="broadcast")
        p.add_argument("--n", type=int, required=True)
        p.add_argument("--batch", type=int, default=500)
        p.add_argument("--workers", type=int, default=1, help="workers to warm up (0: none)")
        p.add_argument("--rate", type=float, default=200.0)
        p.add_argument("--deadline", type=float, default=60.0)
    args = parser.parse_args()
    commands = {
        "bulk": cmd_bulk,
        "notify": cmd_notify,
        "paced": cmd_paced,
        "bare": cmd_bare,
        "bare-produce": cmd_bare_produce,
        "listener-only": cmd_listener_only,
        "unsupported": cmd_unsupported,
        "floor-consume": cmd_floor_consume,
    }
    commands[args.command](args)


if __name__ == "__main__":
    main()
