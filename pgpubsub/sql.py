"""Every SQL statement pgpubsub runs, in one place.

Identifiers are composed with :class:`psycopg.sql.Identifier`; values are
always bound parameters.
"""

from __future__ import annotations

import re
from pathlib import Path

from psycopg import sql

#: The current version of the SQL installed by pgpubsub's migrations.
SQL_VERSION = 1

#: Each version of the SQL pgpubsub installs -> the pgpubsub migration that
#: installs it. An app migration whose triggers use a version's objects must
#: run after that migration: ``makemigrations`` writes the dependency, and
#: the migration orders older files after it (``pgpubsub.migration_order``).
#: A new version is a new template, a new migration, and one more entry here.
SQL_MIGRATIONS: dict[int, str] = {
    1: "0007_pgpubsub_v1",
}

# A call of one of pgpubsub's versioned functions: pgpubsub_publish_v1(...
_VERSIONED_CALL = re.compile(r"\bpgpubsub_[a-z]+(?:_[a-z]+)*_v(\d+)\s*\(")
# The set-based INSERT of a durable channel's statement trigger, which needs
# the column defaults of pgpubsub_v1.sql. (The triggers of django-pgpubsub
# 1.3.1 insert with VALUES and need nothing of version 1.)
_V1_OUTBOX_INSERT = re.compile(r"INSERT INTO pgpubsub_notification \(channel, payload\)\s+SELECT\b")


def sql_versions_used(text: str) -> set[int]:
    """The versions of pgpubsub's SQL that trigger SQL (or any SQL text) uses."""
    versions = {int(found) for found in _VERSIONED_CALL.findall(text)}
    if _V1_OUTBOX_INSERT.search(text):
        versions.add(1)
    return versions


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


# Whether pgpubsub's migrations have run: its outbox table and the publish
# function of the current SQL version exist (bound: the function's name).
SCHEMA_INSTALLED = """
SELECT current_database(),
       to_regclass('pgpubsub_notification') IS NOT NULL AND to_regproc(%s) IS NOT NULL
"""


def publish_function() -> str:
    """The name of the publish function of the current SQL version."""
    return f"pgpubsub_publish_v{SQL_VERSION}"


def listen(channel: str) -> sql.Composed:
    return sql.SQL("LISTEN {}").format(sql.Identifier(channel))


PUBLISH = "SELECT pgpubsub_publish_v1(%s, %s, NULL, NULL, %s::json)"

NOTIFY = "SELECT pg_notify(%s, %s)"

FETCH_PAYLOAD = "SELECT payload FROM pgpubsub_payload WHERE id = %s"

DELETE_EXPIRED_PAYLOADS = (
    "DELETE FROM pgpubsub_payload WHERE created_at < now() - make_interval(secs => %s)"
)

# Claims the next batch of due notifications of a worker's channels, walking
# the primary key forward from a keyset position. No secondary index serves
# it on purpose: an index on pending rows would be maintained by every
# writer's trigger, which is the hot path; the primary key is enough because
# the rows a claim skips (other channels, dead letters, retries not yet due)
# are few next to the rows it takes.
CLAIM = """
SELECT id, channel, payload::text, attempts, created_at
FROM pgpubsub_notification
WHERE id > %s AND channel = ANY(%s) AND state = 'pending'
      AND (available_at IS NULL OR available_at <= now())
ORDER BY id
LIMIT %s
FOR UPDATE SKIP LOCKED
"""

# Claims the next batch of due notifications that have failed before: they
# are processed guarded from then on (see CLAIM_AND_DELETE).
CLAIM_RETRIES = """
SELECT id, channel, payload::text, attempts, created_at
FROM pgpubsub_notification
WHERE id > %s AND channel = ANY(%s) AND state = 'pending' AND attempts > 0
      AND available_at <= now()
ORDER BY id
LIMIT %s
FOR UPDATE SKIP LOCKED
"""

# The optimistic claim: take and delete the next batch in one statement. The
# listeners then run in the same transaction; if one raises, the whole
# transaction rolls back (the rows come back untouched) and the batch is
# claimed again with CLAIM and processed one savepoint per notification.
# Notifications that have failed before are left to CLAIM_RETRIES: one that
# failed once is likely to fail again, and an optimistic run would make the
# listeners before the failing one run twice on every attempt.
CLAIM_AND_DELETE = """
DELETE FROM pgpubsub_notification
WHERE id IN (
    SELECT id
    FROM pgpubsub_notification
    WHERE id > %s AND channel = ANY(%s) AND state = 'pending' AND attempts = 0
      AND (available_at IS NULL OR available_at <= now())
    ORDER BY id
    LIMIT %s
    FOR UPDATE SKIP LOCKED
)
RETURNING id, channel, payload::text, attempts, created_at
"""

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

# The server's version as a number (150004 for 15.4, 180001 for 18.1) and as
# the text it reports, for pgpubsub.server_version.
SERVER_VERSION = (
    "SELECT current_setting('server_version_num')::integer, current_setting('server_version')"
)
