"""Every SQL statement pgpubsub runs, in one place.

Each statement is a named constant (or a function composing one), so that
no SQL text lives anywhere else in the package: the only exceptions are the
migrations and the versioned templates they install
(``migrations_templates/*.sql``, frozen once shipped).
``tests/unit/test_layout.py`` checks it. The modules that run these
statements build :class:`pgpubsub.connector.Query` objects from them or
pass them to a cursor; the trigger bodies at the end are compiled into app
migrations by django-pgtrigger (see :mod:`pgpubsub.triggers`).

Identifiers are composed with :class:`psycopg.sql.Identifier`; values are
always bound parameters. The text written into trigger bodies quotes its
values with :class:`psycopg.sql.Literal`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from psycopg import sql

# -- versions of the installed SQL ----------------------------------------------

#: The current version of the SQL installed by pgpubsub's migrations.
SQL_VERSION = 2

#: Each version of the SQL pgpubsub installs -> the pgpubsub migration that
#: installs it. An app migration whose triggers use a version's objects must
#: run after that migration: ``makemigrations`` writes the dependency, and
#: the migration orders older files after it (``pgpubsub.migration_order``).
#: A new version is a new template, a new migration, and one more entry here.
SQL_MIGRATIONS: dict[int, str] = {
    1: "0007_pgpubsub_v1",
    2: "0008_pgpubsub_v2",
}

# A call of one of pgpubsub's versioned functions: pgpubsub_publish_v1(...
_VERSIONED_CALL = re.compile(r"\bpgpubsub_[a-z]+(?:_[a-z]+)*_v(\d+)\s*\(")
# The set-based INSERT of a durable channel's statement trigger, which needs
# the column defaults of pgpubsub_v1.sql. (The triggers of django-pgpubsub
# 1.3.1 insert with VALUES and need nothing of version 1.)
_V1_OUTBOX_INSERT = re.compile(r"INSERT INTO pgpubsub_notification \(channel, payload\)\s+SELECT\b")
# The tables and the wake-up lock of pgpubsub_v2.sql, used directly by the
# statement triggers of version 2.
_V2_OBJECTS = re.compile(
    r"INSERT INTO pgpubsub_(?:event|broadcast) \(|pg_try_advisory_xact_lock_shared\(1885827187\b"
)


def sql_versions_used(text: str) -> set[int]:
    """The versions of pgpubsub's SQL that trigger SQL (or any SQL text) uses."""
    versions = {int(found) for found in _VERSIONED_CALL.findall(text)}
    if _V1_OUTBOX_INSERT.search(text):
        versions.add(1)
    if _V2_OBJECTS.search(text):
        versions.add(2)
    return versions


# The channel a trigger function publishes on: the first argument of its
# pgpubsub_publish_vN() or pg_notify() call.
_PUBLISH_CHANNEL = re.compile(r"(?:pgpubsub_publish_v\d+|pg_notify)\(\s*'((?:[^']|'')*)'")


def published_channel(function_source: str | None) -> str | None:
    """The database channel name a trigger function's source publishes on, if any."""
    match = _PUBLISH_CHANNEL.search(function_source or "")
    return match.group(1).replace("''", "'") if match else None


# Where the versioned SQL templates are: inside the package in an installed
# wheel (pyproject.toml maps the repository's migrations_templates/ there);
# beside the package in a source checkout and an editable install.
_PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATE_DIRS = (
    _PACKAGE_DIR / "migrations_templates",
    _PACKAGE_DIR.parent / "migrations_templates",
)


def template(name: str) -> str:
    """The text of a versioned SQL template, ``migrations_templates/<name>.sql``."""
    for directory in TEMPLATE_DIRS:
        path = directory / f"{name}.sql"
        if path.is_file():
            return path.read_text(encoding="utf-8")
    looked_in = " and ".join(str(directory) for directory in TEMPLATE_DIRS)
    raise FileNotFoundError(
        f"SQL template {name!r} not found: no {name}.sql in {looked_in}; "
        "is the pgpubsub-django installation complete?"
    )


def publish_function() -> str:
    """The name of the publish function of the current SQL version."""
    return f"pgpubsub_publish_v{SQL_VERSION}"


# Whether pgpubsub's migrations have run: its outbox table and the publish
# function of the current SQL version exist (bound: the function's name).
SCHEMA_INSTALLED = """
SELECT current_database(),
       to_regclass('pgpubsub_notification') IS NOT NULL AND to_regproc(%s) IS NOT NULL
"""

# The server's version as a number (150004 for 15.4, 180001 for 18.1) and as
# the text it reports, for pgpubsub.server_version.
SERVER_VERSION = (
    "SELECT current_setting('server_version_num')::integer, current_setting('server_version')"
)

# -- publishing -------------------------------------------------------------------

# notify(): (channel, durable, events as JSON text).
# notify(): channel name, wake-up key, flags (1 durable, 2 retained), events.
PUBLISH = "SELECT pgpubsub_publish_v2(%s, %s, %s, %s::json)"

# A NOTIFY with a bound channel name and payload (an empty one is a wake-up).
NOTIFY = "SELECT pg_notify(%s, %s)"

# set_notification_context(): (context as JSON text, whether it ends with the
# transaction).
SET_NOTIFICATION_CONTEXT = "SELECT set_config('pgpubsub.notification_context', %s, %s)"

# -- listening --------------------------------------------------------------------


def listen(channel: str) -> sql.Composed:
    """``LISTEN`` on a database channel name (an identifier, quoted)."""
    return sql.SQL("LISTEN {}").format(sql.Identifier(channel))


# The cheapest round trip: it answers a probe and makes a connection read
# the notifications waiting on its socket.
PING = "SELECT 1"

# -- the outbox (durable notifications) -------------------------------------------

# The columns of a claimed notification, in pgpubsub.store.ClaimedNotification's order.
_CLAIMED_COLUMNS = "id, channel, payload::text, attempts, created_at"


def _claimable(columns: str, attempts: str) -> str:
    """Due notifications of a worker's channels after a keyset position, locked as claimed.

    Bound: the position (id), the channel names, the batch size. ``attempts``
    narrows to first attempts or retries. The ORM form of the same predicate,
    for listener filters, is :func:`pgpubsub.store.claimable`.
    """
    return f"""
    SELECT {columns}
    FROM pgpubsub_notification
    WHERE id > %s AND channel = ANY(%s) AND state = 'pending'{attempts}
      AND (available_at IS NULL OR available_at <= now())
    ORDER BY id
    LIMIT %s
    FOR UPDATE SKIP LOCKED
"""


# Claims the next batch of due notifications of a worker's channels, walking
# the primary key forward from a keyset position. No secondary index serves
# it on purpose: an index on pending rows would be maintained by every
# writer's trigger, which is the hot path; the primary key is enough because
# the rows a claim skips (other channels, dead letters, retries not yet due)
# are few next to the rows it takes.
CLAIM = _claimable(_CLAIMED_COLUMNS, "")

# Claims the next batch of due notifications that have failed before: they
# are processed guarded from then on (see CLAIM_AND_DELETE).
CLAIM_RETRIES = _claimable(_CLAIMED_COLUMNS, " AND attempts > 0")

# The optimistic claim: take and delete the next batch in one statement. The
# listeners then run in the same transaction; if one raises, the whole
# transaction rolls back (the rows come back untouched) and the batch is
# claimed again with CLAIM and processed one savepoint per notification.
# Notifications that have failed before are left to CLAIM_RETRIES: one that
# failed once is likely to fail again, and an optimistic run would make the
# listeners before the failing one run twice on every attempt.
CLAIM_AND_DELETE = f"""
DELETE FROM pgpubsub_notification
WHERE id IN ({_claimable("id", " AND attempts = 0")})
RETURNING {_CLAIMED_COLUMNS}
"""

# Completes notifications: (ids).
DELETE_NOTIFICATIONS = "DELETE FROM pgpubsub_notification WHERE id = ANY(%s)"

# Fails a notification: back off, or dead-letter once the attempts are spent.
FAIL_NOTIFICATION = """
UPDATE pgpubsub_notification
SET attempts = attempts + 1,
    last_error = %(error)s,
    state = CASE WHEN attempts + 1 >= %(max_attempts)s THEN 'dead' ELSE 'pending' END,
    available_at = now() + make_interval(secs => %(delay)s)
WHERE id = %(id)s
RETURNING state
"""

# Per database channel name and state: how many notifications, the oldest
# one's created_at, and its age in seconds by the database's clock.
BACKLOG = """
SELECT channel, state, count(*), min(created_at),
       extract(epoch FROM clock_timestamp() - min(created_at))::float8
FROM pgpubsub_notification
GROUP BY channel, state
"""

# -- broadcast payloads too large for a NOTIFY ------------------------------------

FETCH_PAYLOAD = "SELECT payload FROM pgpubsub_payload WHERE id = %s"

DELETE_EXPIRED_PAYLOADS = (
    "DELETE FROM pgpubsub_payload WHERE created_at < now() - make_interval(secs => %s)"
)

# -- probes and status ------------------------------------------------------------

# A probe's statements give up after (milliseconds, as text).
SET_STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', %s, false)"

# The worker LISTEN sessions connected to the current database, oldest first:
# (application_name).
WORKER_SESSIONS = """
SELECT pid, client_addr::text, backend_start, state
FROM pg_stat_activity
WHERE application_name = %s AND datname = current_database() AND pid <> pg_backend_pid()
ORDER BY backend_start
"""

# The database, the server's version and how full its NOTIFY queue is.
SERVER_STATUS = """
SELECT current_database(), current_setting('server_version'), pg_notification_queue_usage()
"""

# Statistics views are read once per transaction; this makes the next read fresh.
CLEAR_STATISTICS_SNAPSHOT = "SELECT pg_stat_clear_snapshot()"

# Every non-internal trigger that is pgtrigger's or calls pgpubsub's publish
# function: (TRIGGERS_PATTERNS).
TRIGGERS = """
SELECT c.relname, n.nspname, t.tgname, t.tgenabled <> 'D',
       obj_description(t.oid, 'pg_trigger'), p.prosrc
FROM pg_trigger AS t
JOIN pg_class AS c ON c.oid = t.tgrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
JOIN pg_proc AS p ON p.oid = t.tgfoid
WHERE NOT t.tgisinternal
  AND (t.tgname LIKE %s OR p.prosrc LIKE %s)
"""
TRIGGERS_PATTERNS = ["pgtrigger\\_%", "%pgpubsub\\_publish\\_v%"]

# -- trigger bodies (compiled into app migrations by django-pgtrigger) -------------
#
# These build the PL/pgSQL of the triggers pgpubsub.triggers declares. What
# they return ends up in migrations, and django-pgtrigger compares its hash
# with the database: changing a single character here makes every installed
# trigger outdated until a new migration reinstalls it.

#: The transition tables of statement-level AFTER triggers.
OLD_TABLE = "pgpubsub_old"
NEW_TABLE = "pgpubsub_new"


def _literal(value: str | bool) -> str:
    """Quote a value as an SQL literal for a trigger body compiled into a migration."""
    return sql.Literal(value).as_string(None)


def publish_call(channel_name: str, key: int, flags: int, events_sql: str) -> str:
    """A ``PERFORM pgpubsub_publish_v2(...)`` of ``events_sql`` (a JSON array expression).

    ``key`` is the channel's wake-up key, ``flags`` where its events go
    (1: the outbox, 2: the event log, 0: the broadcast table).
    """
    return (
        "PERFORM pgpubsub_publish_v2(\n"
        f"        {_literal(channel_name)},\n"
        f"        {key},\n"
        f"        {flags},\n"
        f"        {events_sql}\n"
        "    );\n"
    )


def wake_up(channel_name: str, key: int) -> str:
    """The end of a statement trigger's inserts: a wake-up, only if a reader may be asleep.

    Without the key in shared mode, a reader holds it and sleeps, so this
    NOTIFYs; with it, this transaction holds it until its rows are visible,
    and no reader can go to sleep before then (see :mod:`pgpubsub.wakeups`).
    """
    return (
        f"IF FOUND AND NOT pg_try_advisory_xact_lock_shared({WAKE_LOCK_CLASS}, {key}) THEN\n"
        f"        PERFORM pg_notify({_literal(channel_name)}, '');\n"
        "    END IF;\n"
    )


#: The first number of every pgpubsub advisory lock ('pgps'), see pgpubsub.wakeups.
WAKE_LOCK_CLASS = 1885827187


def row_events(app_label: str, model_name: str, key: str, durable: bool) -> str:
    """The events argument of a row-level trigger's ``pgpubsub_publish_v2()`` call.

    A durable event is stored as it is (with the context merged in by the
    function when one is set), so it carries the stored shape described at
    :func:`stored_head`; the others carry the trigger, the operation and
    the rows.
    """
    head = f"'trigger', {_literal(key)}, 'op', TG_OP"
    rows = "'old', to_json(OLD), 'new', to_json(NEW)"
    if not durable:
        return f"json_build_array(json_build_object({head}, {rows}))"
    return (
        "json_build_array(json_build_object("
        f"'app', {_literal(app_label)}, 'model', {_literal(model_name)}, "
        f"{head}, 'context', '{{}}'::json, {rows}))"
    )


#: The end of a row-level trigger: the row, unchanged (never cancels the operation).
RETURN_ROW = "IF TG_OP = 'DELETE' THEN\n        RETURN OLD;\n    END IF;\n    RETURN NEW;"

# Statement-level AFTER triggers read the rows of the statement from the
# transition tables: the FROM clause, and the old and new row of each event
# (None where the operation has none).
_STATEMENT_SOURCES = {
    "INSERT": f"FROM {NEW_TABLE} AS r",
    "DELETE": f"FROM {OLD_TABLE} AS r",
    # PostgreSQL fills the old and new transition tables side by side, one
    # pair per updated row, so their scan positions pair the rows even when
    # the update changes the primary key.
    "UPDATE": (
        f"FROM (SELECT r, row_number() OVER () AS i FROM {OLD_TABLE} AS r) AS o"
        f" JOIN (SELECT r, row_number() OVER () AS i FROM {NEW_TABLE} AS r) AS n"
        " ON n.i = o.i"
    ),
}
_STATEMENT_ROWS: dict[str, tuple[str | None, str | None]] = {
    "INSERT": (None, "r"),
    "DELETE": ("r", None),
    "UPDATE": ("o.r", "n.r"),
}

#: The start of every trigger function pgpubsub generates: honour
#: ``pgtrigger.ignore()``, whose list of ignored triggers django-pgtrigger
#: keeps in the ``pgtrigger.ignore`` setting as an array literal of trigger
#: names (and ``table:name`` URIs; names never hold a comma or a brace).
#: django-pgtrigger's own test calls a function that reads the setting in an
#: exception block, a subtransaction and a caught error in every writer's
#: statement when the setting is unset; this one costs a string search.
IGNORE_TEST = (
    "IF strpos(',' || btrim(current_setting('pgtrigger.ignore', true), '{}') || ',',"
    " ',' || TG_NAME || ',') > 0 THEN\n"
    "        IF TG_OP = 'DELETE' THEN\n            RETURN OLD;\n        END IF;\n"
    "        RETURN NEW;\n    END IF;"
)


def _format_literal(text: str) -> str:
    """``text`` as a part of a ``str.format`` template: its braces doubled."""
    return text.replace("{", "{{").replace("}", "}}")


#: How django-pgtrigger installs one of pgpubsub's triggers (the template of
#: :class:`pgpubsub.triggers.TriggerSql`, filled by django-pgtrigger with the
#: names, the DECLARE, the body and the trigger's hash). It is django-pgtrigger's
#: own installation SQL with one difference: the function starts with
#: :data:`IGNORE_TEST` instead of calling (and re-creating) django-pgtrigger's
#: ignore function. FROZEN once released: the hash of every generated trigger
#: is taken over this text, so a change would rewrite every user's triggers;
#: it takes a new class with a new name.
TRIGGER_INSTALL = (
    "\n"
    "CREATE OR REPLACE FUNCTION {pgid}()\n"
    "RETURNS TRIGGER AS $$\n"
    "    {declare}\n"
    "    BEGIN\n"
    f"    {_format_literal(IGNORE_TEST)}\n"
    "    {func}\n"
    "    END;\n"
    "$$ LANGUAGE plpgsql;\n"
    "\n"
    "DROP TRIGGER IF EXISTS {pgid} ON {table};\n"
    "CREATE {constraint} TRIGGER {pgid}\n"
    "    {when} {operation} ON {table}\n"
    "    {timing}\n"
    "    {referencing}\n"
    "    FOR EACH {level} {condition}\n"
    "    EXECUTE PROCEDURE {execute};\n"
    "\n"
    "COMMENT ON TRIGGER {pgid} ON {table} IS '{hash}';\n"
)

#: How django-pgtrigger installs the statement-level AFTER triggers of
#: pgpubsub's listener decorators (the template of
#: :class:`pgpubsub.triggers.StatementTriggerSql`): :data:`TRIGGER_INSTALL`
#: without the test of ``pgtrigger.ignore`` at the start of the function,
#: because those bodies (:func:`statement_body`) test the setting themselves,
#: together with the notification context. FROZEN once released, like
#: :data:`TRIGGER_INSTALL`.
STATEMENT_TRIGGER_INSTALL = TRIGGER_INSTALL.replace(f"    {_format_literal(IGNORE_TEST)}\n", "")

#: The notification context of the writer's transaction (text; NULL or ``''`` when none).
CONTEXT_SETTING = "current_setting('pgpubsub.notification_context', true)"
_IGNORE_SETTING = "current_setting('pgtrigger.ignore', true)"


def _event_rows(op: str, *, jsonb: bool) -> list[tuple[str, str]]:
    """The (key, SQL) of the rows of a statement's event: ``old``, ``new`` or both."""
    old, new = _STATEMENT_ROWS[op]
    to = "to_jsonb" if jsonb else "to_json"
    return [(name, f"{to}({row})") for name, row in (("old", old), ("new", new)) if row]


def _pairs(pairs: list[tuple[str, str]]) -> str:
    return ", ".join(f"{_literal(key)}, {value}" for key, value in pairs)


def table_insert(table: str, channel_name: str, key: str, op: str, *, context: bool) -> str:
    """One set-based INSERT of a statement's events into the event log or the broadcast table.

    Each event is one ``json_build_object`` (JSON text, never jsonb); with
    ``context``, it carries the notification context, which must be set.
    """
    pairs = [("trigger", _literal(key)), ("op", _literal(op)), *_event_rows(op, jsonb=False)]
    if context:
        pairs.append(("context", f"{CONTEXT_SETTING}::json"))
    return (
        f"INSERT INTO {table} (channel, payload)\n"
        f"    SELECT {_literal(channel_name)}, json_build_object({_pairs(pairs)})\n"
        f"    {_STATEMENT_SOURCES[op]};\n"
    )


def stored_head(app_label: str, model_name: str, key: str, op: str) -> str:
    """SQL for the constant part of a stored trigger event, a ``jsonb`` literal.

    A stored trigger event has django-pgpubsub 1.3.1's shape, ``app``,
    ``model``, ``context``, ``old`` and ``new`` (``{}`` and ``null`` where
    there is none), so listener filters and queries written for 1.3.1's
    rows keep matching, plus pgpubsub's ``trigger`` and ``op``. The head
    holds every key but the rows the operation has (and ``context {}``,
    which a set context replaces); :func:`outbox_insert` joins it to them.
    """
    head: dict[str, object] = {"app": app_label, "model": model_name, "trigger": key, "op": op}
    head["context"] = {}
    head.update((name, None) for name, row in zip(("old", "new"), _STATEMENT_ROWS[op]) if not row)
    return f"{_literal(json.dumps(head, separators=(',', ':')))}::jsonb"


def outbox_insert(
    channel_name: str, app_label: str, model_name: str, key: str, op: str, *, context: bool
) -> str:
    """A durable channel's set-based outbox INSERT for a statement's rows.

    Each event is the constant head (:func:`stored_head`) joined to a
    ``jsonb_build_object`` of the rows: the same document as the whole
    event built as JSON text and parsed into ``jsonb``, for 1.5 µs less
    per transaction (``bench/trigger_cost.py --loop``). With ``context``,
    the notification context, which must be set, replaces the head's ``{}``.
    """
    pairs = _event_rows(op, jsonb=True)
    if context:
        pairs = [("context", f"{CONTEXT_SETTING}::jsonb"), *pairs]
    head = stored_head(app_label, model_name, key, op)
    return (
        "INSERT INTO pgpubsub_notification (channel, payload)\n"
        f"    SELECT {_literal(channel_name)}, {head} || jsonb_build_object({_pairs(pairs)})\n"
        f"    {_STATEMENT_SOURCES[op]};\n"
    )


def statement_body(
    channel_name: str,
    wake_key: int,
    key: str,
    op: str,
    *,
    app_label: str,
    model_name: str,
    durable: bool,
    retained: bool,
) -> str:
    """The body of a channel's AFTER statement trigger (installed with
    :data:`STATEMENT_TRIGGER_INSTALL`).

    A transition table cannot be handed to a function, so the inserts of
    ``pgpubsub_publish_v2()`` are written out: durable events go to the
    outbox, retained ones to the event log, the others to the broadcast
    table, each with one set-based INSERT; then the wake-up, only if a
    reader may be asleep. (FOUND, which the wake-up tests, is the outcome
    of the last INSERT; every INSERT here takes the same rows.)

    PL/pgSQL prepares every expression it evaluates once per transaction,
    about 2 µs each, and a writer's transaction usually runs its trigger
    once. So the common case, with neither ``pgtrigger.ignore`` nor a
    notification context set, costs one test of both settings before the
    inserts; only when one is set does the body test which (honouring
    ``pgtrigger.ignore()`` for this trigger, and adding the context to the
    events).
    """

    def inserts(context: bool) -> str:
        parts = []
        if durable:
            parts.append(
                outbox_insert(channel_name, app_label, model_name, key, op, context=context)
            )
        if retained:
            parts.append(table_insert(EVENT_LOG, channel_name, key, op, context=context))
        elif not durable:
            parts.append(table_insert(BROADCAST_TABLE, channel_name, key, op, context=context))
        return "".join(parts)

    def block(text: str, by: int) -> str:
        pad = " " * by
        return "".join(f"{pad}{line}\n" if line else "\n" for line in text.strip("\n").split("\n"))

    ignored = f"strpos(',' || btrim({_IGNORE_SETTING}, '{{}}') || ',', ',' || TG_NAME || ',') > 0"
    return (
        f"IF {_IGNORE_SETTING} <> '' OR {CONTEXT_SETTING} <> '' THEN\n"
        f"        IF {ignored} THEN\n"
        "            RETURN NULL;\n"
        "        END IF;\n"
        f"        IF {CONTEXT_SETTING} <> '' THEN\n"
        f"{block(inserts(True), 12)}"
        "        ELSE\n"
        f"{block(inserts(False), 12)}"
        "        END IF;\n"
        "    ELSE\n"
        f"{block(inserts(False), 8)}"
        "    END IF;\n"
        f"    {wake_up(channel_name, wake_key)}"
        "    RETURN NULL;"
    )


#: The event tables, by what they hold.
EVENT_LOG = "pgpubsub_event"
BROADCAST_TABLE = "pgpubsub_broadcast"


# --------------------------------------------------------------------------
# Event tables (version 2): the event log of retained channels and the
# broadcast table, read by position (see pgpubsub.positions).

# One table's part of a read: its next events of some channels after a
# position, below the horizon, in position order. The (xid, id) primary key
# serves both the range and the order.
_READ_PART = """
    (SELECT xid, id, channel, payload, created_at FROM {table}
     WHERE (xid, id) > (%(xid)s::xid8, %(id)s) AND xid < h.horizon AND channel = ANY({channels})
     ORDER BY xid, id LIMIT %(limit)s)"""

# Whether a table holds committed events of the channels at or above the
# horizon: visible, but not to be handed out until older transactions end.
_BEYOND_PART = "EXISTS (SELECT 1 FROM {table} WHERE xid >= h.horizon AND channel = ANY({channels}))"


def read_events(tables: dict[str, list[str]]) -> sql.Composed:
    """The next events of several tables' channels after a position, merged in position order.

    ``tables`` maps a table name to the channel names to read in it (tables
    without channels are left out). Parameters: ``xid`` (text), ``id``,
    ``limit``, and ``<table>`` for each table, its channel names. Every
    result row starts with the horizon (text) and whether committed events
    wait beyond it; with no event, one row of NULLs follows them. One
    snapshot serves the whole statement, so the horizon is the one the rows
    were read under.
    """
    parts = [
        sql.SQL(_READ_PART).format(table=sql.Identifier(table), channels=sql.Placeholder(table))
        for table in tables
    ]
    beyond = [
        sql.SQL(_BEYOND_PART).format(table=sql.Identifier(table), channels=sql.Placeholder(table))
        for table in tables
    ]
    return sql.SQL(
        "SELECT h.horizon::text, {beyond}, e.xid::text, e.id, e.channel, e.payload::text,"
        " extract(epoch FROM e.created_at)::float8\n"
        "FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon) AS h\n"
        "LEFT JOIN LATERAL (\n    SELECT * FROM ({parts}\n    ) AS u\n"
        "    ORDER BY xid, id LIMIT %(limit)s\n) AS e ON true"
    ).format(
        beyond=sql.SQL(" OR ").join(beyond) if beyond else sql.SQL("false"),
        parts=sql.SQL("\n    UNION ALL").join(parts),
    )


#: The position before every event not yet handed out (``pgpubsub.checkpoint()``),
#: and what identifies the database in event ids.
CHECKPOINT = """
SELECT pg_snapshot_xmin(pg_current_snapshot())::text, d.oid, d.datname
FROM pg_database AS d WHERE d.datname = current_database()
"""

#: Where retention cleanup has reached, for the channels given.
TRIMMED = "SELECT channel, xid::text, id FROM pgpubsub_event_trimmed WHERE channel = ANY(%s)"

# listen_to_channels(): the Django connection takes this session lock (the
# lock class 'pgph', its backend pid); the session that holds the channels'
# keys for it waits for the lock in shared mode, which it gets once the
# Django connection has closed, and then closes too. Its statement timeouts
# are turned off first, so that the wait lasts.
LISTENER_LOCK_CLASS = 1885827176
TAKE_LISTENER_LOCK = "SELECT pg_advisory_lock(%s, pg_backend_pid()), pg_backend_pid()"
NO_TIMEOUTS = (
    "SELECT set_config('statement_timeout', '0', false), set_config('lock_timeout', '0', false)"
)
WAIT_FOR_LISTENER = "SELECT pg_advisory_lock_shared(%s, %s)"

#: A reader that has caught up asks to sleep on its channels' keys (one letter each).
SLEEP = "SELECT pgpubsub_sleep_v2(%s::integer[])"

#: A reader gives keys back (after a NOTIFY on their channels).
WAKE = "SELECT pg_advisory_unlock(%s, key) FROM unnest(%s::integer[]) AS key"

#: A reader that stops gives its keys back, then wakes the readers that rely
#: on it (the NOTIFYs go out when the statement commits, after the unlocks):
#: (lock class, keys, the channels' names in the same order).
HAND_OVER = """
SELECT pg_advisory_unlock(%s, k.key), pg_notify(k.name, '')
FROM unnest(%s::integer[], %s::text[]) AS k(key, name)
"""

# Retention cleanup takes this advisory lock for its transaction, so that one
# process at a time cleans up.
TRIM_LOCK = "SELECT pg_try_advisory_xact_lock(%s, %s)"

# Deletes one channel's oldest events that are past its retention (a small
# batch, in position order) and moves its trim watermark to the last one.
TRIM_EVENTS = """
WITH doomed AS (
    SELECT xid, id FROM pgpubsub_event
    WHERE channel = %(channel)s AND created_at < now() - make_interval(secs => %(seconds)s)
    ORDER BY xid, id
    LIMIT %(limit)s
), deleted AS (
    DELETE FROM pgpubsub_event AS e USING doomed AS d
    WHERE e.xid = d.xid AND e.id = d.id
    RETURNING e.xid, e.id
), last AS (
    SELECT xid, id FROM deleted ORDER BY xid DESC, id DESC LIMIT 1
), moved AS (
    INSERT INTO pgpubsub_event_trimmed AS t (channel, xid, id)
    SELECT %(channel)s, xid, id FROM last
    ON CONFLICT (channel) DO UPDATE SET xid = excluded.xid, id = excluded.id, trimmed_at = now()
    WHERE (t.xid, t.id) < (excluded.xid, excluded.id)
)
SELECT count(*) FROM deleted
"""

# Deletes a small batch of broadcast events older than their retention.
TRIM_BROADCAST = """
WITH deleted AS (
    DELETE FROM pgpubsub_broadcast
    WHERE (xid, id) IN (
        SELECT xid, id FROM pgpubsub_broadcast
        WHERE created_at < now() - make_interval(secs => %(seconds)s)
        ORDER BY xid, id
        LIMIT %(limit)s
    )
    RETURNING 1
)
SELECT count(*) FROM deleted
"""


# -- scopes of browser streams (pgpubsub.scope) ------------------------------------

#: Sets a connection's time zone (that of the Django database it stands for).
SET_TIME_ZONE = "SELECT set_config('TimeZone', %s, false)"


def set_role(role: str) -> sql.Composed:
    """``SET ROLE``, for a connection standing for a Django database with ``assume_role``."""
    return sql.SQL("SET ROLE {}").format(sql.Identifier(role))


def scope_rows(rows_alias: str, json_column: str, number_column: str, scope_sql: str) -> str:
    """One scope's part of a judging statement: which of the rows given pass the scope.

    Parameters: the scope's index, the rows as a JSON array, then the scope
    query's own parameters. ``scope_sql`` is the scope queryset as Django
    compiled it, reading its model's row from ``rows_alias.json_column``.
    """
    return (
        f"SELECT %s::int, {rows_alias}.{number_column} FROM json_array_elements(%s::json) "
        f"WITH ORDINALITY AS {rows_alias}({json_column}, {number_column}) "
        f"WHERE EXISTS ({scope_sql})"
    )


def row_as_table(table: str, rows_alias: str, json_column: str) -> str:
    """The FROM item that stands for ``table`` (quoted) with one event row's values."""
    return f"json_populate_record(NULL::{table}, {rows_alias}.{json_column}) AS {table}"


# -- what a test published (pgpubsub.testing) ---------------------------------------
#
# A test's events may be rows of its own transaction, never committed (Django's
# TestCase), or rows other transactions committed (TransactionTestCase), or
# both. A read below the horizon (read_events) sees neither in time, so
# pgpubsub.testing reads "the rows written since the last read" with marks
# each read returns for the next one:
#
# * the snapshot it ran under: a row of another transaction is new when its
#   transaction is not visible in the previous snapshot (it committed since);
# * the current transaction's id, if it has one, and the highest event-table
#   id it has written: a row of the current transaction is new when its id is
#   above that (ids of one session only increase: the sequence's cache is per
#   session). The snapshot cannot serve here: all of a transaction's rows
#   carry one xid, written before the snapshot or after it;
# * the outbox's highest id: the outbox has no transaction column, so its
#   rows are new when their id is above the last read's highest.

# The highest event-table id the current transaction has written (0 if none).
_OWN_LAST = """coalesce(greatest(
        (SELECT max(id) FROM pgpubsub_event WHERE xid = pg_current_xact_id_if_assigned()),
        (SELECT max(id) FROM pgpubsub_broadcast WHERE xid = pg_current_xact_id_if_assigned())
    ), 0)"""

_OUTBOX_LAST = "(SELECT coalesce(max(id), 0) FROM pgpubsub_notification)"

#: The marks of the first read: snapshot, own transaction id (or NULL), its
#: highest event-table id, the outbox's highest id.
TESTING_MARKS = f"""
SELECT pg_current_snapshot()::text, pg_current_xact_id_if_assigned()::text,
    {_OWN_LAST}, {_OUTBOX_LAST}
"""

# One event table's rows of some channels written since the marks
# (snapshot, own, own_last); the xmin bound lets the primary key serve it.
_TESTING_PART = """
    (SELECT xid, id, channel, payload, created_at FROM {table}
     WHERE xid >= pg_snapshot_xmin(%(snapshot)s::pg_snapshot) AND channel = ANY({channels})
       AND CASE WHEN xid = %(own)s::xid8 THEN id > %(own_last)s
           ELSE NOT pg_visible_in_snapshot(xid, %(snapshot)s::pg_snapshot) END)"""


def testing_read_events(tables: dict[str, list[str]]) -> sql.Composed:
    """The event-table rows of some channels written since the marks, in position order.

    ``tables`` maps a table name to the channel names to read in it (at
    least one table). Parameters: ``snapshot``, ``own`` (text or NULL),
    ``own_last``, and ``<table>`` for each table, its channel names. Every
    result row starts with the marks for the next read (snapshot, own,
    own_last); with no event, one row of NULLs follows them.
    """
    parts = [
        sql.SQL(_TESTING_PART).format(table=sql.Identifier(table), channels=sql.Placeholder(table))
        for table in tables
    ]
    return sql.SQL(
        "SELECT pg_current_snapshot()::text, pg_current_xact_id_if_assigned()::text, "
        + _OWN_LAST
        + ",\n    e.xid::text, e.id, e.channel, e.payload::text,"
        " extract(epoch FROM e.created_at)::float8\n"
        "FROM (SELECT 1) AS one LEFT JOIN LATERAL ({parts}\n) AS e ON true\n"
        "ORDER BY e.xid, e.id"
    ).format(parts=sql.SQL("\n    UNION ALL").join(parts))


#: The outbox rows of some channels above an id, in id order: (id, channel names).
TESTING_READ_OUTBOX = """
SELECT id, channel, payload::text, extract(epoch FROM created_at)::float8
FROM pgpubsub_notification
WHERE id > %s AND channel = ANY(%s)
ORDER BY id
"""

#: How many notifications of each channel above an id a claim would take now:
#: (id, channel names).
TESTING_DUE = """
SELECT channel, count(*) FROM pgpubsub_notification
WHERE id > %s AND channel = ANY(%s) AND state = 'pending'
  AND (available_at IS NULL OR available_at <= now())
GROUP BY channel
"""
