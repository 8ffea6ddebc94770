"""What pgpubsub's statement trigger costs a writer, with no reader at all (issue 15).

Workload 8 always runs a worker beside the writers; this experiment takes
it away, to separate what the trigger costs each writer transaction from
what consuming the events costs on the same cores. In a scratch database
``bench_trigger_cost`` of the server at ``DATABASE_URL`` it installs the
shipped SQL (``migrations_templates/pgpubsub_v2.sql``: the event log, the
broadcast table, their sequence) and one table per variant, all alike
(an identity key, ``n``, ``label``), with:

* ``none``: no trigger, the reference;
* ``floor_notify`` and ``floor_log``: the two floors of workload 8;
* ``broadcast`` and ``retained``: the statement trigger pgpubsub generates
  for a broadcast and a retained ``TriggerChannel``, its body built by
  ``pgpubsub.sql.statement_body`` (the same function the triggers use),
  which tests ``pgtrigger.ignore`` itself;
  ``broadcast_pgtrigger_ignore`` puts django-pgtrigger's own test in front
  (a call of its ignore function, an exception block), as pgpubsub's
  triggers had it until 2026-12-01;
* ``durable``: the statement trigger of a durable ``TriggerChannel``,
  writing to an outbox table shaped as Django's migrations create it
  (its key's sequence has no cache); ``durable_cached``: the same into a
  copy whose sequence caches 32 values per session;
* ``floor_log_keyed``: the log floor with the event tables' ordered key,
  ``(xid, id)``, which reading in commit order needs;
  ``floor_log_keyed_document``: the same table, each row holding the
  document a durable trigger stores (1.3.1's shape, built as ``durable``
  builds it) in place of the bare row: what that document costs on its
  own, without the outbox's other columns and the settings test;
  ``floor_log_keyed_document_flat`` builds that document with one
  ``jsonb_build_object`` of every key instead of the constant head joined
  to the row (1.5 µs slower per transaction, ``--loop``); and
  ``broadcast_unkeyed``: the broadcast body into a copy of the broadcast
  table without that key. Together they price the key;
* ``broadcast_no_wakeup``, ``durable_no_wakeup`` and
  ``retained_no_wakeup``: the generated bodies without their wake-up test
  (the shared advisory lock), to price that test on its own;
  ``durable_insert_only`` is the outbox INSERT alone (no settings test, no
  wake-up) and ``durable_insert_wakeup`` that INSERT and the wake-up: with
  ``durable`` and ``durable_no_wakeup`` they price the settings test and
  the wake-up apart (0.5 µs each, ``--loop``);
* ``broadcast_raw``: only the broadcast table's INSERT, one
  ``json_build_object`` per row, with no context test and no wake-up;
  ``broadcast_raw_unkeyed`` the same into the copy without the key, and
  ``broadcast_raw_spread_key`` into a copy whose key starts with the
  writer's backend (``pg_backend_pid() % 8``), so that concurrent writers
  insert at eight places in the index instead of one. Together they tell
  the CPU of the key's index from contention on its last page.
  ``broadcast_raw_xid_index`` writes to a copy indexed on ``xid`` alone,
  a narrower key than ``(xid, id)``.

Nobody sleeps on the wake-up key, so a writer never sends a NOTIFY: this
is the writer's cost while readers are busy. pgbench then runs the single
row ``INSERT`` of workload 8 on each table, in alternating order over the
rounds, and the script prints each variant's median tps over the
reference's, and the server's CPU per transaction (all PostgreSQL
processes, sampled while every writer is connected). Run it on the
benchmark's server settings (fsync on)::

    PGPUBSUB_PG_DURABLE=1 PGPUBSUB_PGDATA=bench/.work/pgdata-trigger-cost \\
        .venv/bin/python tools/pgserver.py run -- .venv/bin/python bench/trigger_cost.py

``--writers 1,32``, ``--seconds 5`` and ``--rounds 3`` are the defaults;
``--variants a,b`` measures only those (and ``none``).

``--loop N`` replaces pgbench: from one session, each variant's table
takes N single-row transactions through a procedure that commits after
each row, and the script prints the server CPU per transaction of that
session, to 0.5 µs with N = 20,000 (``loop_costs``). With no other writer,
no client round trip and no wait for the WAL flush, the parts of a trigger
are priced within a minute, where the contended pgbench runs differ by
several µs between rounds.

``broadcast_previous``, ``retained_previous`` and ``durable_previous``
are the bodies pgpubsub generated until 2026-12-01, behind
``pgpubsub.sql.IGNORE_TEST``: the notification context held in a variable
and tested by an IF of its own, and the outbox's event built as JSON text
parsed into ``jsonb``. PL/pgSQL prepares each expression it evaluates once
per transaction, and the bodies generated since then evaluate fewer.
``durable_json``, ``durable_row`` are variants of ``durable_previous``.

``--wal N`` also replaces pgbench: from one session, each variant's table
takes N single-row transactions after a checkpoint, and the script prints
the WAL each transaction wrote, by record type, from ``pg_walinspect``
(full-page images apart), and, for the variants whose events are claimed
by deleting them, the WAL the least consumer's claim writes per event
(``wal_costs``). Bytes matter here: with many writers, commits wait for
the WAL to be flushed, and the more each commit logs, the longer.

``--waits`` also samples ``pg_stat_activity`` every 10 ms while pgbench
runs and prints, under each variant, how many of the scratch database's
active sessions were, on average, in each of the four commonest wait
events or on a CPU (``LWLock:WALWrite``: waiting for another session's
flush of the WAL; ``IO:WalSync``: the flush itself).

``--consume`` runs the least a consumer can do beside pgbench, on the same
cores, for every variant that writes events: a process that takes the
events in batches of up to 500, inserts one row per event into a scratch
table in the same transaction, and polls every millisecond when there is
nothing. It reads the event log and the broadcast table by position, with
the query pgpubsub's readers run (``pgpubsub.sql.read_events``), and it
claims rows of the outbox and the unindexed tables with ``DELETE ...
RETURNING`` by ``ctid``, as workload 8's limit does. It prices the tables
and triggers with their events consumed, free of the listener and worker
costs of workload 8.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from pgtrigger import compiler
from psycopg import sql
from psycopg.conninfo import make_conninfo

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from harness import cpu_seconds  # noqa: E402
from writes import _TPS, find_pgbench  # noqa: E402

from pgpubsub import sql as pgpubsub_sql  # noqa: E402

DATABASE = "bench_trigger_cost"
CHANNEL = "bench.channels.CostChannel"
WAKE_KEY = 4242

_LITERAL_CHANNEL = sql.Literal(CHANNEL).as_string()


def _generated(*, durable: bool, retained: bool) -> tuple[str, str]:
    """The DECLARE and body pgpubsub generates for an AFTER INSERT statement trigger."""
    body = pgpubsub_sql.statement_body(
        CHANNEL,
        WAKE_KEY,
        "after_insert",
        "INSERT",
        app_label="bench",
        model_name="costrow",
        durable=durable,
        retained=retained,
    )
    return "", body


_DURABLE = _generated(durable=True, retained=False)
_BROADCAST = _generated(durable=False, retained=False)
_RETAINED = _generated(durable=False, retained=True)
_WAKE_UP = pgpubsub_sql.wake_up(CHANNEL, WAKE_KEY)

# The statement bodies pgpubsub generated until 2026-12-01 (installed behind
# pgpubsub.sql.IGNORE_TEST): the notification context held in a variable
# and tested by an IF of its own, and the outbox's event built as JSON text
# and parsed into jsonb. Each PL/pgSQL expression is prepared once per
# transaction, which the bodies generated since then evaluate fewer of.
_PREVIOUS_CONTEXT = (
    "pgpubsub_context json := "
    "NULLIF(current_setting('pgpubsub.notification_context', true), '')::json;"
)
_PREVIOUS_WAKE_UP = _WAKE_UP + "    RETURN NULL;"


def _previous_table_body(table: str) -> str:
    event = "json_build_object('trigger', 'after_insert', 'op', 'INSERT', 'new', to_json(r){})"

    def insert(extra: str) -> str:
        return (
            f"INSERT INTO {table} (channel, payload)\n"
            f"        SELECT {_LITERAL_CHANNEL}, {event.format(extra)}\n"
            "        FROM pgpubsub_new AS r;\n"
        )

    with_context = insert(", 'context', pgpubsub_context")
    return (
        f"{pgpubsub_sql.IGNORE_TEST}\n    IF pgpubsub_context IS NULL THEN\n        {insert('')}"
        f"    ELSE\n        {with_context}    END IF;\n"
        f"    {_PREVIOUS_WAKE_UP}"
    )


_PREVIOUS_DURABLE_HEAD = (
    "pgpubsub_head text := "
    '\'{"app":"bench","model":"costrow","trigger":"after_insert","op":"INSERT"'
    ",\"context\":' || COALESCE(NULLIF(current_setting('pgpubsub.notification_context', true),"
    " ''), '{}');"
)
_PREVIOUS_DURABLE_BODY = (
    f"{pgpubsub_sql.IGNORE_TEST}\n"
    "    INSERT INTO pgpubsub_notification (channel, payload)\n"
    f"        SELECT {_LITERAL_CHANNEL},"
    " (pgpubsub_head || ',\"old\":null,\"new\":' || to_json(r)::text || '}')::jsonb\n"
    "        FROM pgpubsub_new AS r;\n"
    f"    {_PREVIOUS_WAKE_UP}"
)
_PREVIOUS_DURABLE = (_PREVIOUS_DURABLE_HEAD, _PREVIOUS_DURABLE_BODY)

# django-pgtrigger's start of every trigger function it installs: a call of
# its ignore function, which reads the pgtrigger.ignore setting inside an
# exception block (a subtransaction, and an error caught whenever the
# setting was never set in the session).
_PGTRIGGER_IGNORE = (
    'IF ("public"._pgtrigger_should_ignore(TG_NAME) IS TRUE) THEN\n        RETURN NULL;\n'
    "    END IF;\n    "
)

# The broadcast table's INSERT alone: what remains of the broadcast body
# without its settings test and its wake-up.
_RAW_INSERT = (
    "INSERT INTO {table} (channel, payload)\n"
    f"        SELECT {_LITERAL_CHANNEL},"
    " json_build_object('trigger', 'after_insert', 'op', 'INSERT', 'new', to_json(r))"
    " FROM pgpubsub_new AS r;\n    RETURN NULL;"
)

# The durable body's outbox INSERT alone, with no settings test and no wake-up.
_OUTBOX_INSERT = pgpubsub_sql.outbox_insert(
    CHANNEL, "bench", "costrow", "after_insert", "INSERT", context=False
)

#: Variant name -> the trigger function's DECLARE and body (None: no trigger).
VARIANTS: dict[str, tuple[str, str] | None] = {
    "none": None,
    "floor_notify": ("", "PERFORM pg_notify('c', 'x');\n    RETURN NULL;"),
    "floor_log": (
        "",
        "INSERT INTO floor_log SELECT to_jsonb(r) FROM pgpubsub_new AS r;\n    RETURN NULL;",
    ),
    "broadcast": _BROADCAST,
    "broadcast_previous": (_PREVIOUS_CONTEXT, _previous_table_body(pgpubsub_sql.BROADCAST_TABLE)),
    "broadcast_pgtrigger_ignore": ("", _PGTRIGGER_IGNORE + _BROADCAST[1]),
    "retained": _RETAINED,
    "retained_previous": (_PREVIOUS_CONTEXT, _previous_table_body(pgpubsub_sql.EVENT_LOG)),
    "durable": _DURABLE,
    "durable_previous": _PREVIOUS_DURABLE,
    "durable_cached": (
        "",
        _DURABLE[1].replace("INTO pgpubsub_notification ", "INTO notification_cached "),
    ),
    "durable_json": (
        _PREVIOUS_DURABLE_HEAD,
        _PREVIOUS_DURABLE_BODY.replace(
            "INTO pgpubsub_notification ", "INTO notification_json "
        ).replace("::jsonb", "::json"),
    ),
    "durable_floor": (
        "",
        "INSERT INTO pgpubsub_notification (channel, payload)"
        f" SELECT {_LITERAL_CHANNEL}, to_jsonb(r)"
        " FROM pgpubsub_new AS r;\n    RETURN NULL;",
    ),
    "durable_row": (
        _PREVIOUS_DURABLE_HEAD,
        _PREVIOUS_DURABLE_BODY.replace("to_json(r)", "to_json(NEW)").replace(
            "\n        FROM pgpubsub_new AS r;", ";"
        ),
    ),
    "floor_log_keyed_row": (
        "",
        "INSERT INTO floor_log_keyed (row) VALUES (to_jsonb(NEW));\n    RETURN NULL;",
    ),
    "durable_lean": (
        "",
        _DURABLE[1].replace("INTO pgpubsub_notification ", "INTO notification_lean "),
    ),
    "floor_log_keyed": (
        "",
        "INSERT INTO floor_log_keyed (row) SELECT to_jsonb(r) FROM pgpubsub_new AS r;\n"
        "    RETURN NULL;",
    ),
    "floor_log_keyed_document": (
        "",
        "INSERT INTO floor_log_keyed (row)\n"
        f"        SELECT {pgpubsub_sql.stored_head('bench', 'costrow', 'after_insert', 'INSERT')}"
        " || jsonb_build_object('new', to_jsonb(r)) FROM pgpubsub_new AS r;\n    RETURN NULL;",
    ),
    "floor_log_keyed_document_flat": (
        "",
        "INSERT INTO floor_log_keyed (row)\n"
        "        SELECT jsonb_build_object('app', 'bench', 'model', 'costrow', 'trigger',"
        " 'after_insert', 'op', 'INSERT', 'context', '{}'::jsonb, 'old', NULL::jsonb,"
        " 'new', to_jsonb(r)) FROM pgpubsub_new AS r;\n    RETURN NULL;",
    ),
    "durable_insert_only": ("", _OUTBOX_INSERT + "    RETURN NULL;"),
    "durable_insert_wakeup": ("", _OUTBOX_INSERT + _WAKE_UP + "    RETURN NULL;"),
    "broadcast_unkeyed": (
        "",
        _BROADCAST[1].replace("INTO pgpubsub_broadcast ", "INTO broadcast_unkeyed "),
    ),
    "broadcast_no_wakeup": ("", _BROADCAST[1].replace(_WAKE_UP, "")),
    "durable_no_wakeup": ("", _DURABLE[1].replace(_WAKE_UP, "")),
    "retained_no_wakeup": ("", _RETAINED[1].replace(_WAKE_UP, "")),
    "broadcast_raw": ("", _RAW_INSERT.format(table=pgpubsub_sql.BROADCAST_TABLE)),
    "broadcast_raw_unkeyed": ("", _RAW_INSERT.format(table="broadcast_unkeyed")),
    "broadcast_raw_spread_key": ("", _RAW_INSERT.format(table="broadcast_spread_key")),
    "broadcast_raw_xid_index": ("", _RAW_INSERT.format(table="broadcast_xid_index")),
}

#: Variants installed as row-level triggers (no transition table): what a
#: single-row statement would pay without the statement trigger's tuplestore.
ROW_LEVEL = frozenset({"durable_row", "floor_log_keyed_row"})

#: The table each variant writes its events to, and how ``--consume`` takes
#: them: "position" (read by position, as pgpubsub's readers do) or
#: "delete" (claimed with DELETE ... RETURNING by ctid).
EVENTS_IN: dict[str, tuple[str, str]] = {
    "floor_log": ("floor_log", "delete"),
    "broadcast": (pgpubsub_sql.BROADCAST_TABLE, "position"),
    "broadcast_previous": (pgpubsub_sql.BROADCAST_TABLE, "position"),
    "broadcast_pgtrigger_ignore": (pgpubsub_sql.BROADCAST_TABLE, "position"),
    "retained": (pgpubsub_sql.EVENT_LOG, "position"),
    "retained_previous": (pgpubsub_sql.EVENT_LOG, "position"),
    "durable": ("pgpubsub_notification", "delete"),
    "durable_previous": ("pgpubsub_notification", "delete"),
    "durable_cached": ("notification_cached", "delete"),
    "durable_json": ("notification_json", "delete"),
    "durable_lean": ("notification_lean", "delete"),
    "durable_row": ("pgpubsub_notification", "delete"),
    "floor_log_keyed_row": ("floor_log_keyed", "delete"),
    "durable_floor": ("pgpubsub_notification", "delete"),
    "floor_log_keyed": ("floor_log_keyed", "delete"),
    "floor_log_keyed_document": ("floor_log_keyed", "delete"),
    "floor_log_keyed_document_flat": ("floor_log_keyed", "delete"),
    "durable_insert_only": ("pgpubsub_notification", "delete"),
    "durable_insert_wakeup": ("pgpubsub_notification", "delete"),
    "broadcast_unkeyed": ("broadcast_unkeyed", "delete"),
    "broadcast_no_wakeup": (pgpubsub_sql.BROADCAST_TABLE, "position"),
    "durable_no_wakeup": ("pgpubsub_notification", "delete"),
    "retained_no_wakeup": (pgpubsub_sql.EVENT_LOG, "position"),
    "broadcast_raw": (pgpubsub_sql.BROADCAST_TABLE, "position"),
    "broadcast_raw_unkeyed": ("broadcast_unkeyed", "delete"),
    "broadcast_raw_spread_key": ("broadcast_spread_key", "delete"),
    "broadcast_raw_xid_index": ("broadcast_xid_index", "delete"),
}

#: Tables emptied between rounds.
EVENT_TABLES = (
    "pgpubsub_event",
    "pgpubsub_broadcast",
    "floor_log",
    "floor_log_keyed",
    "broadcast_unkeyed",
    "broadcast_spread_key",
    "broadcast_xid_index",
    "pgpubsub_notification",
    "notification_cached",
    "notification_json",
    "notification_lean",
)


def _table(name: str) -> sql.Identifier:
    return sql.Identifier(f"cost_{name}")


def prepare(admin_url: str, url: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(DATABASE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    template = (REPO / "migrations_templates" / "pgpubsub_v2.sql").read_text()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(template.encode())
        # django-pgtrigger's ignore function, as its trigger installation creates it.
        upsert = compiler.UpsertTriggerSql(
            pgid="cost_probe",
            func="RETURN NULL;",
            table="cost_probe",
            when="AFTER",
            operation="INSERT",
        )
        conn.execute(str(upsert).split("CREATE OR REPLACE FUNCTION cost_probe()")[0].encode())
        conn.execute("CREATE TABLE floor_log (row jsonb NOT NULL)")
        # The log floor with the event tables' ordered key, and the broadcast
        # table without it: what the (xid, id) key costs a writer.
        conn.execute(
            "CREATE TABLE floor_log_keyed (xid xid8 NOT NULL DEFAULT pg_current_xact_id(), "
            "id bigint NOT NULL DEFAULT nextval('pgpubsub_event_id_seq'), row jsonb NOT NULL, "
            "PRIMARY KEY (xid, id))"
        )
        conn.execute(
            "CREATE UNLOGGED TABLE broadcast_unkeyed (LIKE pgpubsub_broadcast INCLUDING DEFAULTS)"
        )
        conn.execute(
            "CREATE UNLOGGED TABLE broadcast_spread_key (writer smallint NOT NULL "
            "DEFAULT pg_backend_pid() % 8, LIKE pgpubsub_broadcast INCLUDING DEFAULTS, "
            "PRIMARY KEY (writer, xid, id))"
        )
        # A narrower key: a plain index on xid alone (8 bytes, duplicates
        # folded by the B-tree's deduplication) instead of the (xid, id) key.
        conn.execute(
            "CREATE UNLOGGED TABLE broadcast_xid_index (LIKE pgpubsub_broadcast INCLUDING DEFAULTS)"
        )
        conn.execute("CREATE INDEX ON broadcast_xid_index (xid)")
        conn.execute("CREATE TABLE consumed (n integer NOT NULL)")
        # The outbox as Django's migrations create it (its key's sequence has
        # no cache), and a copy whose sequence caches 32 values per session.
        for table, cache in (("pgpubsub_notification", 1), ("notification_cached", 32)):
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (id bigint GENERATED BY DEFAULT AS IDENTITY "
                    "(CACHE {}) PRIMARY KEY, channel varchar(63) NOT NULL, payload jsonb NOT NULL, "
                    "created_at timestamptz NOT NULL DEFAULT now(), db_version integer, "
                    "attempts integer NOT NULL DEFAULT 0, available_at timestamptz, "
                    "last_error text, state varchar(16) NOT NULL DEFAULT 'pending')"
                ).format(sql.Identifier(table), sql.Literal(cache))
            )
        conn.execute("CREATE TABLE notification_json (LIKE pgpubsub_notification INCLUDING ALL)")
        conn.execute("ALTER TABLE notification_json ALTER payload TYPE json")
        conn.execute(
            "CREATE TABLE notification_lean (id bigint GENERATED BY DEFAULT AS IDENTITY "
            "PRIMARY KEY, channel varchar(63) NOT NULL, payload jsonb NOT NULL, "
            "created_at timestamptz NOT NULL DEFAULT now())"
        )
        for name, trigger in VARIANTS.items():
            conn.execute(
                sql.SQL(
                    "CREATE TABLE {} (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
                    "n integer NOT NULL, label text NOT NULL)"
                ).format(_table(name))
            )
            if trigger is None:
                continue
            declare, body = trigger
            function = sql.Identifier(f"cost_{name}_fn")
            conn.execute(
                sql.SQL(
                    "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $cost$\n"
                    "DECLARE\n    {}\nBEGIN\n    {}\nEND\n$cost$"
                ).format(function, sql.SQL(declare), sql.SQL(body))
            )
            level = (
                "FOR EACH ROW"
                if name in ROW_LEVEL
                else "REFERENCING NEW TABLE AS pgpubsub_new FOR EACH STATEMENT"
            )
            conn.execute(
                sql.SQL("CREATE TRIGGER cost AFTER INSERT ON {} {} EXECUTE FUNCTION {}()").format(
                    _table(name), sql.SQL(level), function
                )
            )


def empty(url: str, measured: list[str], consumed: bool) -> None:
    """Check that every trigger measured wrote its events, then empty the tables.

    With ``--consume`` the consumer has taken the events: the check is then
    that it recorded some.
    """
    with psycopg.connect(url, autocommit=True) as conn:
        written = {EVENTS_IN[name][0] for name in measured if name in EVENTS_IN}
        for table in sorted({"consumed"} if consumed and written else written):
            query = sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.Identifier(table))
            row = conn.execute(query).fetchone()
            if not row or not row[0]:
                raise SystemExit(f"{table} is empty: a trigger under test wrote nothing")
        tables = [*EVENT_TABLES, "consumed", *(f"cost_{name}" for name in VARIANTS)]
        conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(", ").join(map(sql.Identifier, tables))))
        conn.execute("CHECKPOINT")


def _delete_claim(table: str) -> sql.Composed:
    """The least consumer's claim: up to 500 of ``table``'s rows, locked, then deleted."""
    return sql.SQL(
        "DELETE FROM {t} WHERE ctid = ANY(ARRAY("
        "SELECT ctid FROM {t} LIMIT 500 FOR UPDATE SKIP LOCKED)) RETURNING 1"
    ).format(t=sql.Identifier(table))


def consume(url: str, table: str, how: str) -> None:
    """Take a table's events until killed: the least a consumer does (``--consume``)."""
    record = "INSERT INTO consumed (n) VALUES (1)"
    with psycopg.connect(url, autocommit=True) as conn:
        if how == "delete":
            claim = _delete_claim(table)
            while True:
                with conn.transaction(), conn.cursor() as cur:
                    taken = len(cur.execute(claim).fetchall())
                    if taken:
                        cur.executemany(record, [()] * taken)
                if not taken:
                    time.sleep(0.001)
        read = pgpubsub_sql.read_events({table: [CHANNEL]})
        params: dict[str, object] = {"xid": "0", "id": 0, "limit": 500, table: [CHANNEL]}
        while True:
            with conn.transaction(), conn.cursor() as cur:
                rows = [row for row in cur.execute(read, params).fetchall() if row[2] is not None]
                if rows:
                    params.update(xid=rows[-1][2], id=rows[-1][3])
                    cur.executemany(record, [()] * len(rows))
            if not rows:
                time.sleep(0.001)


def server_cpu() -> dict[int, float]:
    """CPU seconds used so far by each of this machine's PostgreSQL server processes."""
    found = {}
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if fh.read().startswith(b"postgres"):
                    found[pid] = cpu_seconds(pid)
        except OSError:
            continue
    return found


#: What each active session of the scratch database is doing, for ``--waits``.
_WAITS = (
    "SELECT coalesce(wait_event_type || ':' || wait_event, 'on a CPU') FROM pg_stat_activity"
    " WHERE datname = %s AND state = 'active' AND pid <> pg_backend_pid()"
)


def sample_waits(url: str, until: float, every: float = 0.01) -> collections.Counter[str]:
    """The mean number of active sessions in each wait event (or on a CPU) until ``until``."""
    seen: collections.Counter[str] = collections.Counter()
    samples = 0
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < until:
            seen.update(row[0] for row in conn.execute(_WAITS, (DATABASE,)).fetchall())
            samples += 1
            time.sleep(every)
    return collections.Counter({key: count / max(samples, 1) for key, count in seen.items()})


def run_pgbench(
    pgbench: Path, url: str, name: str, writers: int, seconds: int, waits: bool = False
) -> tuple[float, float, collections.Counter[str]]:
    """tps, the server's CPU microseconds per transaction, and (``waits``) wait events.

    The server's CPU is sampled from the second second to the last but one,
    while every writer's backend is alive (a backend's CPU leaves /proc with
    it), and divided by the transactions pgbench reports for that window.
    With ``waits``, ``pg_stat_activity`` is sampled every 10 ms in that
    window (:func:`sample_waits`; its own session is left out).
    """
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        statement = sql.SQL("INSERT INTO {} (n, label) VALUES (:client_id, '');\n")
        script.write(statement.format(_table(name)).as_string(None))
    try:
        proc = subprocess.Popen(
            [
                str(pgbench),
                *("--no-vacuum", "--client", str(writers), "--jobs", str(min(2, writers))),
                *("--time", str(seconds), "--progress", "1", "--file", script.name, url),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.2)
        first, t0 = server_cpu(), time.monotonic()
        window = max(0.5, seconds - 2.4)
        found_waits: collections.Counter[str] = collections.Counter()
        if waits:
            found_waits = sample_waits(url, t0 + window)
        else:
            time.sleep(window)
        last, t1 = server_cpu(), time.monotonic()
        out, progress = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"pgbench on {name} failed:\n{progress[-1500:]}")
    finally:
        os.unlink(script.name)
    found = _TPS.search(out)
    if found is None:
        raise SystemExit(f"pgbench on {name} printed no tps:\n{out[-1500:]}")
    rate = float(found.group(1))
    cpu = sum(last[pid] - first[pid] for pid in last if pid in first)
    return rate, 1e6 * cpu / (rate * (t1 - t0)), found_waits


def _create_loops(conn: psycopg.Connection[Any], measured: list[str]) -> None:
    """A procedure per variant that inserts ``n`` rows into its table, committing each."""
    for name in measured:
        conn.execute(
            sql.SQL(
                "CREATE OR REPLACE PROCEDURE {}(n integer) LANGUAGE plpgsql AS $loop$\n"
                "BEGIN\n    FOR i IN 1..n LOOP\n"
                "        INSERT INTO {} (n, label) VALUES (i, '');\n        COMMIT;\n"
                "    END LOOP;\nEND\n$loop$"
            ).format(sql.Identifier(f"cost_loop_{name}"), _table(name))
        )


def _call_loop(conn: psycopg.Connection[Any], name: str, transactions: int) -> None:
    conn.execute(
        sql.SQL("CALL {}(%s)").format(sql.Identifier(f"cost_loop_{name}")), (transactions,)
    )


def _wal_since(conn: psycopg.Connection[Any], start: str) -> tuple[str, dict[str, tuple[int, int]]]:
    """The WAL written since ``start``: the end position, and bytes and FPI bytes by record type.

    Positions are the flushed end of the WAL, which every commit of this
    session has reached (PostgreSQL 15's ``pg_walinspect`` reads no further).
    """
    end = _flushed(conn)
    rows = conn.execute(
        'SELECT "resource_manager/record_type", record_size, fpi_size'
        " FROM pg_get_wal_stats(%s::pg_lsn, %s::pg_lsn, true) WHERE count > 0",
        (start, end),
    ).fetchall()
    return end, {str(kind): (int(size), int(fpi)) for kind, size, fpi in rows}


def _flushed(conn: psycopg.Connection[Any]) -> str:
    """The flushed end of the WAL."""
    row = conn.execute("SELECT pg_current_wal_flush_lsn()::text").fetchone()
    assert row is not None
    return str(row[0])


def wal_costs(url: str, measured: list[str], transactions: int) -> None:
    """``--wal``: the WAL a writer transaction writes under each variant, and its consumer's.

    From one session, as ``--loop`` does, each variant's table takes
    ``transactions`` single-row transactions after a checkpoint, and
    ``pg_walinspect`` sums the WAL between the positions before and after,
    by record type. Full-page images (the first change of each page after a
    checkpoint, and hint bits under data checksums) are counted apart: they
    depend on where the checkpoint fell more than on the trigger. For a
    variant whose events are claimed by deleting them (``EVENTS_IN``), the
    least consumer's claim (``DELETE`` by ``ctid`` of rows locked ``FOR
    UPDATE SKIP LOCKED``, 500 at a time) then takes them all, and its WAL
    per event is printed too. In a busy server other sessions' WAL would be
    counted as well: run it on a server of its own.
    """
    per_tx: dict[str, tuple[float, float, dict[str, float]]] = {}
    consumer: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_walinspect")
        _create_loops(conn, measured)
        for name in measured:
            conn.execute("CHECKPOINT")
            start = _flushed(conn)
            _call_loop(conn, name, transactions)
            end, kinds = _wal_since(conn, start)
            records = sum(size for size, _ in kinds.values()) / transactions
            images = sum(fpi for _, fpi in kinds.values()) / transactions
            by_kind = {kind: size / transactions for kind, (size, _) in kinds.items()}
            per_tx[name] = (records, images, by_kind)
            table, how = EVENTS_IN.get(name, ("", ""))
            if how == "delete":
                claim = _delete_claim(table)
                taken = 0
                while batch := len(conn.execute(claim).fetchall()):
                    taken += batch
                if not taken:
                    raise SystemExit(f"{table} is empty: a trigger under test wrote nothing")
                _, claimed = _wal_since(conn, end)
                consumer[name] = sum(size for size, _ in claimed.values()) / taken
            empty(url, [] if name in consumer else [name], consumed=False)
    reference = per_tx["none"][0]
    print(
        f"one session, {transactions} single-row transactions per variant after a checkpoint,"
        " WAL per transaction (pg_walinspect):"
    )
    for name in measured:
        records, images, by_kind = per_tx[name]
        extra = records - reference
        line = f"  {name:24s} {records:6.0f} B  ({extra:+4.0f}; full pages {images:.0f} B)"
        if name in consumer:
            line += f"  consumer {consumer[name]:.0f} B/event"
        print(line)
        top = sorted(by_kind.items(), key=lambda item: -item[1])[:4]
        print("      records: " + ", ".join(f"{kind} {size:.0f}" for kind, size in top))


def loop_costs(url: str, measured: list[str], transactions: int, rounds: int) -> None:
    """``--loop``: each variant's server CPU per transaction, from one session, with no contention.

    A procedure inserts ``transactions`` rows into the variant's table, one
    transaction each (it commits after every row), so the trigger runs as
    in a writer's transaction, with what PL/pgSQL prepares once per
    transaction prepared every time. There is no client round trip, no
    other writer and no consumer, and commits do not wait for the WAL
    flush (``synchronous_commit`` off in that session), so what remains is
    the CPU of the insert and its trigger, counted from /proc for the
    session's backend. /proc counts in ticks of 10 ms: 20,000 transactions
    resolve 0.5 µs.
    """
    results: dict[str, list[float]] = {name: [] for name in measured}
    with psycopg.connect(url, autocommit=True) as conn:
        _create_loops(conn, measured)
        conn.execute("SET synchronous_commit = off")
        backend = conn.info.backend_pid
        if not os.path.exists(f"/proc/{backend}/stat"):
            raise SystemExit(
                f"--loop reads the CPU of the server's backend {backend} from /proc:"
                " run it on the machine of the server at DATABASE_URL"
            )
        for round_ in range(rounds):
            for name in measured if round_ % 2 == 0 else list(reversed(measured)):
                before = cpu_seconds(backend)
                _call_loop(conn, name, transactions)
                results[name].append(1e6 * (cpu_seconds(backend) - before) / transactions)
            empty(url, measured, consumed=False)
    reference = statistics.median(results["none"])
    print(
        f"one session, median of {rounds} rounds of {transactions} transactions,"
        " server CPU per transaction:"
    )
    for name in measured:
        median = statistics.median(results[name])
        spread = f"{min(results[name]):.1f}-{max(results[name]):.1f}"
        print(f"  {name:24s} {median:6.1f} us  ({median - reference:+5.1f}; rounds {spread})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", default="1,32")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="", help="only these variants (and none)")
    parser.add_argument("--consume", action="store_true", help="a bare consumer beside pgbench")
    parser.add_argument(
        "--loop",
        type=int,
        default=0,
        metavar="N",
        help="instead of pgbench: N transactions per variant from one session (see loop_costs)",
    )
    parser.add_argument(
        "--wal",
        type=int,
        default=0,
        metavar="N",
        help="instead of pgbench: each variant's WAL per transaction over N (see wal_costs)",
    )
    parser.add_argument(
        "--waits",
        action="store_true",
        help="also sample pg_stat_activity's wait events while pgbench runs",
    )
    parser.add_argument("--consumer-of", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consumer_of:
        consume(*args.consumer_of)
        return
    measured = ["none", *(name for name in VARIANTS if name != "none")]
    if args.variants:
        wanted = args.variants.split(",")
        unknown = sorted(set(wanted) - set(VARIANTS))
        if unknown:
            raise SystemExit(
                f"--variants: no variant {', '.join(unknown)}; known: {', '.join(VARIANTS)}"
            )
        measured = ["none", *(name for name in measured if name in wanted and name != "none")]
    admin_url = os.environ["DATABASE_URL"]
    url = make_conninfo(admin_url, dbname=DATABASE)
    prepare(admin_url, url)
    if args.loop or args.wal:
        if args.loop:
            loop_costs(url, measured, args.loop, args.rounds)
        if args.wal:
            wal_costs(url, measured, args.wal)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(DATABASE)))
        return
    pgbench = find_pgbench()
    tps: dict[tuple[str, int], list[float]] = {}
    cpu: dict[tuple[str, int], list[float]] = {}
    waits: dict[tuple[str, int], collections.Counter[str]] = {}
    for writers in (int(w) for w in args.writers.split(",")):
        for round_ in range(args.rounds):
            for name in measured if round_ % 2 == 0 else list(reversed(measured)):
                consumer = None
                if args.consume and name in EVENTS_IN:
                    table, how = EVENTS_IN[name]
                    consumer = subprocess.Popen(
                        [sys.executable, __file__, "--consumer-of", url, table, how]
                    )
                try:
                    rate, per_tx, found = run_pgbench(
                        pgbench, url, name, writers, args.seconds, args.waits
                    )
                finally:
                    if consumer is not None:
                        consumer.kill()
                        consumer.wait()
                tps.setdefault((name, writers), []).append(rate)
                cpu.setdefault((name, writers), []).append(per_tx)
                waits.setdefault((name, writers), collections.Counter()).update(
                    {key: mean / args.rounds for key, mean in found.items()}
                )
            empty(url, measured, args.consume)
        reference = statistics.median(tps[("none", writers)])
        print(
            f"{writers} writer(s), median of {args.rounds} rounds of {args.seconds} s"
            f"{', a bare consumer beside pgbench' if args.consume else ''}:"
        )
        for name in measured:
            median = statistics.median(tps[(name, writers)])
            per_tx = statistics.median(cpu[(name, writers)])
            print(
                f"  {name:24s} {median:9.0f} tx/s  {median / reference:5.2f}x no trigger  "
                f"server CPU {per_tx:5.0f} us/tx"
            )
            if args.waits:
                common = waits[(name, writers)].most_common(4)
                print("      sessions: " + ", ".join(f"{n:.1f} {key}" for key, n in common))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(DATABASE)))


if __name__ == "__main__":
    main()
