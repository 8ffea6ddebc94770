"""Probes: short-lived connections that ask the database how pgpubsub is doing.

The readiness endpoint pings the database (:func:`ping`), ``manage.py
pgpubsub health`` counts the worker LISTEN sessions
(:func:`connected_workers`), and the metrics read the backlog at each
scrape. Each opens its own psycopg connection with ``connect_timeout`` and
``statement_timeout`` rather than using Django's: Django connections belong
to a thread, and a probe must fail fast instead of hanging when the server
is unreachable.

:func:`worker_sessions` is also what ``pgpubsub status`` runs on Django's
connection: one query for the worker sessions, wherever it runs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from typing import Any

import psycopg

from . import sql
from .connection import conninfo_params
from .connector import Query, Row, execute

#: The ``application_name`` of the connections opened by health and metrics probes.
PROBE_APPLICATION_NAME = "pgpubsub-probe"

#: Default seconds a probe may take to connect and answer.
DEFAULT_PROBE_TIMEOUT = 2.0


def probe_params(using: str, timeout: float = DEFAULT_PROBE_TIMEOUT) -> dict[str, Any]:
    """psycopg connection parameters for a probe of the Django database ``using``.

    Call it in the main thread: it reads Django's connection settings.
    """
    params = conninfo_params(using)
    params["application_name"] = PROBE_APPLICATION_NAME
    # libpq counts connect_timeout in whole seconds and treats 1 as 2.
    params["connect_timeout"] = max(2, math.ceil(timeout))
    return params


def worker_application_name(using: str) -> str:
    """The ``application_name`` with which the workers of ``using`` connect."""
    return str(conninfo_params(using)["application_name"])


@contextlib.contextmanager
def probe_connection(
    params: Mapping[str, Any], timeout: float = DEFAULT_PROBE_TIMEOUT
) -> Iterator[psycopg.Connection[Any]]:
    """A short-lived autocommit connection whose statements time out after ``timeout`` s."""
    conn = psycopg.connect(**params, autocommit=True)
    try:
        conn.execute(sql.SET_STATEMENT_TIMEOUT, [str(max(1, int(timeout * 1000)))])
        yield conn
    finally:
        conn.close()


def run(conn: psycopg.Connection[Any], query: Query[Any]) -> Any:
    """Run ``query`` on a probe connection."""
    with conn.cursor() as cursor:
        return execute(cursor, query)


def error_text(exc: BaseException) -> str:
    """The first line of an error's message (its type's name when it has none)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def ping(params: Mapping[str, Any], timeout: float = DEFAULT_PROBE_TIMEOUT) -> str | None:
    """Run ``SELECT 1``; return None when the database answered, else the error."""
    try:
        with probe_connection(params, timeout) as conn:
            conn.execute(sql.PING).fetchone()
    except psycopg.Error as exc:
        return error_text(exc)
    return None


def _sessions(rows: list[Row]) -> list[dict[str, Any]]:
    return [
        {"pid": pid, "client_addr": addr, "backend_start": started, "state": state}
        for pid, addr, started, state in rows
    ]


def worker_sessions(application_name: str) -> Query[list[dict[str, Any]]]:
    """The worker LISTEN sessions connected to the current database, oldest first."""
    return Query(sql.WORKER_SESSIONS, [application_name], _sessions)


def _first(rows: list[Row]) -> Row:
    return rows[0]


def server_status() -> Query[Row]:
    """The database's name, the server's version and how full its NOTIFY queue is."""
    return Query(sql.SERVER_STATUS, None, _first)


def connected_workers(conn: psycopg.Connection[Any], application_name: str) -> list[dict[str, Any]]:
    """The worker LISTEN sessions connected to the current database."""
    sessions: list[dict[str, Any]] = run(conn, worker_sessions(application_name))
    return sessions
