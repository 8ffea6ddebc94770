"""pgpubsub's own psycopg connections to a Django database, and their failures.

A worker LISTENs on a connection of its own, not on Django's (which its
listeners use), and the health and metrics probes open short-lived ones
(:mod:`pgpubsub.probes`). Both start from :func:`conninfo_params`: Django's
settings for the database, with pgpubsub's ``application_name`` and TCP
keepalives.

This module also says which errors mean that a connection is gone (the
worker reconnects; :data:`CONNECTION_ERRORS`), which refusals no retry can
fix (:func:`configuration_error`), and checks what a worker needs before it
starts (:func:`check_migrated`, :func:`preflight`).
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from django.db import connections
from django.db import utils as db_utils

from . import sql
from .exceptions import DatabaseConfigurationError, DatabaseNotMigrated

#: The ``application_name`` of every worker's LISTEN connection, by which
#: ``manage.py pgpubsub status``/``health`` and the metrics find the workers.
WORKER_APPLICATION_NAME = "pgpubsub-worker"

#: Errors after which the worker reconnects instead of giving up.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    db_utils.OperationalError,
    db_utils.InterfaceError,
)


def conninfo_params(using: str) -> dict[str, Any]:
    """psycopg parameters for a worker's LISTEN connection to the Django database ``using``."""
    params = dict(connections[using].get_connection_params())
    for key in ("cursor_factory", "context", "prepare_threshold", "row_factory"):
        params.pop(key, None)
    params["application_name"] = WORKER_APPLICATION_NAME
    # An idle LISTEN connection sends nothing; TCP keepalives make a silently
    # dropped network (no FIN, no RST) show up as a dead socket within about
    # a minute and a half, so the worker reconnects.
    params.setdefault("keepalives", 1)
    params.setdefault("keepalives_idle", 60)
    params.setdefault("keepalives_interval", 10)
    params.setdefault("keepalives_count", 3)
    return params


# How PostgreSQL and libpq word the refusals of a connection that retrying
# cannot fix: SQLSTATE classes 28 (invalid authorization: unknown role, wrong
# password, no pg_hba.conf entry, role without LOGIN) and 3D (no such
# database), and a database the role may not connect to. psycopg does not
# give the SQLSTATE of an error raised while connecting, so the (English)
# message is all there is; a message in another language is retried like
# any other connection failure.
_CONFIGURATION_ERRORS = re.compile(
    r"authentication failed for user"
    r'|role "[^"]*" does not exist'
    r"|no pg_hba\.conf entry for"
    r"|is not permitted to log in"
    r"|no password supplied"
    r'|database "[^"]*" does not exist'
    r"|permission denied for database"
)


def configuration_error(exc: BaseException) -> str | None:
    """The reason, when ``exc`` is a connection refused for its settings; else ``None``."""
    sqlstate = getattr(exc, "sqlstate", None) or getattr(exc.__cause__, "sqlstate", None)
    text = str(exc)
    if (sqlstate and sqlstate[:2] in ("28", "3D")) or _CONFIGURATION_ERRORS.search(text):
        # psycopg's: "connection failed: connection to server at ... failed: FATAL:  ..."
        reason = re.sub(r"\s+", " ", text).strip().removeprefix("connection failed: ")
        return reason or type(exc).__name__
    return None


def check_migrated(conn: psycopg.Connection[Any], using: str) -> None:
    """Raise :class:`DatabaseNotMigrated` when pgpubsub's migrations have not run on ``conn``."""
    row = conn.execute(sql.SCHEMA_INSTALLED, [sql.publish_function()]).fetchone()
    assert row is not None
    database, installed = row
    if not installed:
        raise DatabaseNotMigrated(using, database)


def preflight(using: str) -> None:
    """Fail fast, before starting workers, on what no retry can fix.

    Raises :class:`DatabaseConfigurationError` when the database refuses the
    connection for its settings and :class:`DatabaseNotMigrated` when
    pgpubsub's migrations have not run. Any other connection failure is left
    to the workers, which retry.
    """
    params = conninfo_params(using)
    params["application_name"] = "pgpubsub-preflight"
    try:
        conn = psycopg.Connection.connect(**params, autocommit=True)
    except psycopg.OperationalError as exc:
        reason = configuration_error(exc)
        if reason is not None:
            raise DatabaseConfigurationError(using, reason) from exc
        return
    with conn:
        check_migrated(conn, using)
