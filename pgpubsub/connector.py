"""The connector seam: queries as values, and the runners that execute them.

A :class:`Query` is a statement, its bound parameters and the function that
reads its rows into a result. Building one does no I/O, so the code that
decides *what* to ask the database (the outbox store in
:mod:`pgpubsub.store`, the backlog, the probes) is written once, and any
runner can execute it:

* :class:`SyncConnector` runs queries on a Django connection, in the
  caller's transaction: the worker, ``pgpubsub.listen`` and the management
  commands use it, so a claim commits together with the listeners' writes;
* :class:`AsyncConnector` runs the same queries on a psycopg
  ``AsyncConnection``, for code running in an event loop;
* :func:`execute` is the one synchronous execution, on any DB-API cursor
  (Django's or psycopg's); :class:`SyncConnector` and the probes' own
  connections use it.

Both connectors also say whether their connection is lost (as opposed to a
statement that failed) and whether a listener left the transaction aborted.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Generic, TypeVar

import psycopg
from django.db import connections, transaction
from psycopg.sql import Composed

T = TypeVar("T")
RowT = TypeVar("RowT", bound=tuple[Any, ...])
#: One row of a result, as the driver returns it.
Row = tuple[Any, ...]
Params = Sequence[Any] | Mapping[str, Any] | None


def no_result(rows: list[Row]) -> None:
    """The parse function of a statement whose rows, if any, are not wanted."""
    return None


def all_rows(rows: list[Row]) -> list[Row]:
    """The parse function that keeps every row as it is."""
    return rows


def first_row(rows: list[Row]) -> Row | None:
    """The parse function that keeps the first row (``None`` when there is none)."""
    return rows[0] if rows else None


def rows_as(row_type: type[RowT]) -> Callable[[list[Row]], list[RowT]]:
    """The parse function that makes each row a ``row_type``, a ``NamedTuple`` of its columns."""
    # The driver's rows are tuples of the right length already: making each
    # one through tuple.__new__ costs half of what the class's own __new__
    # (argument parsing) does, and a claim makes one per notification.
    make = functools.partial(tuple.__new__, row_type)

    def parse(rows: list[Row]) -> list[RowT]:
        return list(map(make, rows))

    return parse


class Query(Generic[T]):
    """A statement to run, its bound parameters, and how to read its rows into a ``T``.

    A plain value: building one does no I/O, and the same query runs on
    any connector.
    """

    __slots__ = ("params", "parse", "sql")

    def __init__(
        self,
        sql: str | Composed,
        params: Params = None,
        parse: Callable[[list[Row]], T] = no_result,  # type: ignore[assignment]
    ) -> None:
        self.sql = sql
        self.params = params
        self.parse = parse

    def __repr__(self) -> str:
        text = self.sql if isinstance(self.sql, str) else repr(self.sql)
        return f"Query({' '.join(text.split())[:60]!r}, {self.params!r})"


def execute(cursor: Any, query: Query[T]) -> T:
    """Run ``query`` on a DB-API ``cursor`` (Django's or psycopg's) and parse its rows."""
    cursor.execute(query.sql, query.params)
    rows = cursor.fetchall() if cursor.description is not None else []
    return query.parse(rows)


def send_last(conn: psycopg.Connection[Any], query: Query[Any]) -> None:
    """Send ``query`` as the connection's last statement, without waiting for its result.

    For what a process says on its way out, just before it closes the
    connection: the server runs the statement before it reads the end of
    the session, and a network gone silent cannot hold the process up (a
    statement awaited there would block until TCP gives up, minutes
    later). The parameters are bound on the client, by psycopg's own
    adaptation (``ClientCursor.mogrify``, the binding Django uses).
    """
    text = psycopg.ClientCursor(conn).mogrify(query.sql, query.params)
    conn.pgconn.send_query(text.encode(conn.info.encoding))
    conn.pgconn.flush()


def _lost(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any] | None) -> bool:
    if conn is None or conn.closed:
        return True
    return bool(conn.pgconn.status != psycopg.pq.ConnStatus.OK)


def _aborted(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any] | None) -> bool:
    return conn is not None and conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR


class SyncConnector:
    """Runs queries on the Django connection ``using``, in the caller's transaction."""

    def __init__(self, using: str) -> None:
        self.using = using

    def run(self, query: Query[T]) -> T:
        """Execute ``query`` and return its parsed result."""
        with connections[self.using].cursor() as cursor:
            return execute(cursor, query)

    def transaction(self) -> AbstractContextManager[Any]:
        """A transaction, or a savepoint inside one (``transaction.atomic``)."""
        return transaction.atomic(using=self.using)

    def is_lost(self) -> bool:
        """Whether the connection is unusable (as opposed to a failed statement)."""
        return _lost(connections[self.using].connection)

    def transaction_aborted(self) -> bool:
        """Whether the current transaction is aborted (a statement in it failed)."""
        return _aborted(connections[self.using].connection)


class AsyncConnector:
    """Runs queries on a psycopg ``AsyncConnection``."""

    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self.connection = connection

    async def run(self, query: Query[T]) -> T:
        """Execute ``query`` and return its parsed result."""
        async with self.connection.cursor() as cursor:
            await cursor.execute(query.sql, query.params)
            rows = await cursor.fetchall() if cursor.description is not None else []
        return query.parse(rows)

    def transaction(self) -> AbstractAsyncContextManager[Any]:
        """A transaction, or a savepoint inside one (``AsyncConnection.transaction``)."""
        return self.connection.transaction()

    def is_lost(self) -> bool:
        """Whether the connection is unusable (as opposed to a failed statement)."""
        return _lost(self.connection)

    def transaction_aborted(self) -> bool:
        """Whether the current transaction is aborted (a statement in it failed)."""
        return _aborted(self.connection)
