"""Scopes: which rows of a trigger channel's events a client may see.

A scope is a queryset of the channel's model (``Author.objects.filter(
tenant=request.user.tenant)``). An event is judged on its own rows, the old
and the new row as the trigger saw them, not on the table's current state:
by the time the event is judged the row may have changed again or been
deleted, and a delete must be judged on the row that was deleted.

How a row is judged
-------------------
The queryset is compiled by Django (``qs.values("pk")``) into SQL that
reads the model's table under its own name, e.g.::

    SELECT "app_author"."id" AS "pk" FROM "app_author" WHERE "app_author"."tenant_id" = %s

The ``FROM "app_author"`` of the outer query is replaced by the event row,
rebuilt with the table's own row type and bound to the same name::

    FROM json_populate_record(NULL::"app_author", "pgpubsub_e"."pgpubsub_j") AS "app_author"

and the query becomes an ``EXISTS`` over each row of a batch::

    SELECT "pgpubsub_e"."pgpubsub_n"
    FROM json_array_elements(%s::json) WITH ORDINALITY AS "pgpubsub_e"("pgpubsub_j", "pgpubsub_n")
    WHERE EXISTS (<the compiled query>)

so one statement judges the old and new rows of a whole batch of events,
and several scopes are judged in one round trip (``UNION ALL``). Every
column reference of the outer query (``"app_author"."tenant_id"``) reads the
event's row; joins to other tables (``tenant__active=True``) read those
tables as they are when the event is judged. Only the outer ``FROM`` is
replaced: a subquery or a self-join that reads the model's table again
(``pk__in=Author.objects.filter(...)``, ``mentor__name=...``) reads the real
table, as it is now.

Replacing the table by a common table expression of the same name
(``WITH "app_author" AS (...)``) would work for the plain cases too, but it
would also capture those subqueries and self-joins (they would read the
event rows instead of the table), and it would judge all rows of a batch
together, so grouping and ``DISTINCT`` in a scope would mix rows of
different events. Judging each row in its own ``EXISTS`` avoids both.

Limits (all refused with a :class:`~pgpubsub.exceptions.ScopeError` when the
scope is built, never silently wrong): a sliced queryset, ``union()`` and
the other combinators, ``distinct(*fields)``, a queryset of another model,
and a table whose ``db_table`` names a schema (``'"sales"."author"'``; a
table found through ``search_path`` works). With multi-table inheritance
the event rows are those of the child's table; filters on the parent's
fields read the parent table as it is now (so a deleted child's parent row
is gone): filter on the child's own columns.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import psycopg
from django.core.exceptions import EmptyResultSet
from django.db import connections, models

from . import sql
from .channel import TriggerChannel
from .exceptions import ScopeError
from .hub import Event, PerLoop

logger = logging.getLogger("pgpubsub")

#: The ``application_name`` of the connections that judge scopes.
SCOPE_APPLICATION_NAME = "pgpubsub-scope"

#: Verdicts kept per process (one per scope and event), so that the clients
#: of one scope share them.
CACHE_SIZE = 20_000

#: Scopes judged per statement.
SCOPES_PER_STATEMENT = 50

_ROWS = '"pgpubsub_e"'
_JSON = '"pgpubsub_j"'
_NUMBER = '"pgpubsub_n"'

_encode = msgspec.json.Encoder().encode


@dataclasses.dataclass(frozen=True)
class RowScope:
    """A compiled scope: the ``EXISTS`` test of one queryset, for rows of one table."""

    #: The database alias the scope is judged on.
    using: str
    #: ``SELECT ... FROM json_populate_record(...) AS "table" ...`` (``%s`` placeholders).
    sql: str
    params: tuple[Any, ...]
    #: Every row passes (no filter): nothing to ask the database.
    admits_all: bool = False
    #: No row passes (``.none()``, or a filter that cannot match).
    admits_none: bool = False

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies the scope: clients with equal keys share their verdicts."""
        return (self.using, self.sql, repr(self.params))

    @classmethod
    def from_queryset(cls, queryset: object, channel: type[TriggerChannel], using: str) -> RowScope:
        """Compile ``queryset`` as a scope of ``channel``'s events (sync: Django compiles it).

        Raises :class:`~pgpubsub.exceptions.ScopeError` saying what cannot be judged.
        """
        model = channel.get_model()
        if not isinstance(queryset, models.QuerySet):
            raise ScopeError(
                f"the scope of {channel.name()} must be a QuerySet of {model._meta.label} "
                f"(or None for every event), got {queryset!r}"
            )
        if queryset.model._meta.concrete_model is not model._meta.concrete_model:
            raise ScopeError(
                f"the scope of {channel.name()} is a QuerySet of {queryset.model._meta.label}, "
                f"but the channel's events are rows of {model._meta.label}"
            )
        query = queryset.query
        if query.is_sliced:
            raise ScopeError(
                f"the scope of {channel.name()} is sliced ([start:stop]); a scope decides "
                "which rows a client may see, one row at a time: remove the slice"
            )
        if query.combinator:
            raise ScopeError(
                f"the scope of {channel.name()} uses {query.combinator}(); express it with "
                "filter() and Q objects (Q(...) | Q(...)) instead"
            )
        if query.distinct_fields:
            raise ScopeError(
                f"the scope of {channel.name()} uses distinct(*fields), which cannot judge "
                "one row at a time; remove it"
            )
        connection = connections[using]
        table = connection.ops.quote_name(model._meta.db_table)
        if '"."' in table:
            raise ScopeError(
                f"{model._meta.label}'s table {table} names a schema; scopes can only judge "
                "tables found through search_path (leave the schema out of db_table and "
                "add it to the connection's search_path)"
            )
        try:
            compiled, params = queryset.order_by().values("pk").query.get_compiler(using).as_sql()
        except EmptyResultSet:
            return cls(using, "", (), admits_none=True)
        quoted = re.escape(table)
        head = re.match(
            rf'^SELECT (?:DISTINCT )?{quoted}\."[^"]+"(?: AS "pk")? FROM {quoted}(?= |$)', compiled
        )
        if head is None:
            raise ScopeError(
                f"the scope of {channel.name()} compiles to SQL pgpubsub cannot judge rows "
                f"with (expected it to select from {table}): {compiled[:200]}"
            )
        rest = compiled[head.end() :]
        if not rest and not params:
            return cls(using, "", (), admits_all=True)
        select = head.group(0)[: -len(table)]
        replaced = f"{select}{sql.row_as_table(table, _ROWS, _JSON)}{rest}"
        return cls(using, replaced, tuple(params))


Verdict = tuple[bool, bool]


class ScopeJudge:
    """Judges events' rows against scopes for one event loop and database.

    Requests made while a statement runs are gathered into the next one, so
    the clients of a scope (and the scopes of a batch) share round trips;
    verdicts are cached per scope and event. One connection per process
    and database, opened on first use.
    """

    def __init__(self, using: str) -> None:
        self.using = using
        self.conn: psycopg.AsyncConnection[Any] | None = None
        self._cache: collections.OrderedDict[tuple[Any, str], Verdict] = collections.OrderedDict()
        self._pending: dict[tuple[str, str, str], tuple[RowScope, dict[str, Event]]] = {}
        self._inflight: dict[tuple[Any, str], asyncio.Future[Verdict]] = {}
        self._task: asyncio.Task[None] | None = None
        self._checked: set[tuple[str, str, str]] = set()
        self._keeper: asyncio.Task[None] | None = None

    async def verdicts(self, scope: RowScope, events: Sequence[Event]) -> list[Verdict]:
        """Whether ``scope`` admits the old and the new row of each event (False where absent)."""
        if scope.admits_all or scope.admits_none:
            return [_trivial(scope, event) for event in events]
        key = scope.key
        waits: list[asyncio.Future[Verdict] | Verdict] = []
        for event in events:
            cached = self._cache.get((key, event.id))
            if cached is not None:
                waits.append(cached)
                continue
            future = self._inflight.get((key, event.id))
            if future is None:
                future = asyncio.get_running_loop().create_future()
                self._inflight[(key, event.id)] = future
                self._pending.setdefault(key, (scope, {}))[1][event.id] = event
            waits.append(future)
        if self._pending and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(
                self._flush(), name="pgpubsub-scope-judge"
            )
        return [wait if isinstance(wait, tuple) else await asyncio.shield(wait) for wait in waits]

    async def check(self, scope: RowScope) -> None:
        """Run ``scope`` once on no rows, so that a scope the database refuses fails now."""
        if scope.admits_all or scope.admits_none or scope.key in self._checked:
            return
        await self._execute([(scope, [])])
        self._checked.add(scope.key)
        if len(self._checked) > CACHE_SIZE:
            self._checked.clear()

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, {}
            work = [(scope, list(events.values())) for scope, events in batch.values()]
            try:
                results = await self._execute(work)
            except BaseException as exc:
                for scope, events in work:
                    for event in events:
                        future = self._inflight.pop((scope.key, event.id), None)
                        if future is not None and not future.done():
                            future.set_exception(exc)
                if not isinstance(exc, Exception):
                    raise
                continue
            for (scope, events), verdicts in zip(work, results):
                for event, verdict in zip(events, verdicts):
                    self._remember((scope.key, event.id), verdict)
                    future = self._inflight.pop((scope.key, event.id), None)
                    if future is not None and not future.done():
                        future.set_result(verdict)

    def _remember(self, key: tuple[Any, str], verdict: Verdict) -> None:
        self._cache[key] = verdict
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    async def _execute(self, work: list[tuple[RowScope, list[Event]]]) -> list[list[Verdict]]:
        """Judge each scope's events; one statement per :data:`SCOPES_PER_STATEMENT` scopes."""
        results: list[list[Verdict]] = []
        for start in range(0, len(work), SCOPES_PER_STATEMENT):
            chunk = work[start : start + SCOPES_PER_STATEMENT]
            parts: list[str] = []
            params: list[Any] = []
            rows_of: list[list[tuple[int, int]]] = []
            for index, (scope, events) in enumerate(chunk):
                rows: list[bytes] = []
                where: list[tuple[int, int]] = []
                for position, event in enumerate(events):
                    wire = event.wire
                    assert wire is not None
                    for side, row in ((0, wire.old), (1, wire.new)):
                        if row is not None:
                            rows.append(_encode(row))
                            where.append((position, side))
                rows_of.append(where)
                parts.append(sql.scope_rows(_ROWS, _JSON, _NUMBER, scope.sql))
                params += [index, (b"[" + b",".join(rows) + b"]").decode(), *scope.params]
            found = await self._fetch(" UNION ALL ".join(parts), params)
            for index, (_scope, events) in enumerate(chunk):
                verdicts = [[False, False] for _ in events]
                for number in found.get(index, ()):
                    position, side = rows_of[index][number - 1]
                    verdicts[position][side] = True
                results.append([(old, new) for old, new in verdicts])
        return results

    async def _fetch(self, statement: str, params: list[Any]) -> dict[int, list[int]]:
        """Run the judging statement; retry once on a new connection if the old one broke."""
        for attempt in (1, 2):
            conn = await self._connection()
            try:
                async with conn.cursor() as cursor:
                    await cursor.execute(statement, params)
                    rows = await cursor.fetchall()
            except psycopg.OperationalError:
                await self._close()
                if attempt == 2:
                    raise
                continue
            found: dict[int, list[int]] = {}
            for index, number in rows:
                found.setdefault(index, []).append(number)
            return found
        raise AssertionError("unreachable")  # pragma: no cover

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self.conn is None or self.conn.closed:
            self.conn = await connect(self.using)
            if self._keeper is None or self._keeper.done():
                self._keeper = asyncio.get_running_loop().create_task(
                    self._keep(), name="pgpubsub-scope-connection"
                )
        return self.conn

    async def _keep(self) -> None:
        """Close the connection when the event loop ends (it cancels this task then)."""
        try:
            await asyncio.Event().wait()
        finally:
            await self._close()

    async def _close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.close()
            self.conn = None


def _trivial(scope: RowScope, event: Event) -> Verdict:
    wire = event.wire
    assert wire is not None
    if scope.admits_none:
        return (False, False)
    return (wire.old is not None, wire.new is not None)


async def connect(using: str) -> psycopg.AsyncConnection[Any]:
    """An autocommit connection that runs Django-compiled SQL as Django's own connection would.

    The parameters, adapters and time zone of the Django database ``using``;
    client-side binding unless its ``OPTIONS`` ask for server-side binding.
    """
    from asgiref.sync import sync_to_async

    params, timezone, role = await sync_to_async(_settings, thread_sensitive=False)(using)
    conn = await psycopg.AsyncConnection.connect(**params, autocommit=True)
    if timezone:
        await conn.execute(sql.SET_TIME_ZONE, [timezone])
    if role:
        await conn.execute(sql.set_role(role))
    return conn


def _settings(using: str) -> tuple[dict[str, Any], str | None, str | None]:
    from .connection import conninfo_params

    connection = connections[using]
    django_params = connection.get_connection_params()
    params = conninfo_params(using)
    params["application_name"] = SCOPE_APPLICATION_NAME
    if "context" in django_params:
        params["context"] = django_params["context"]
    server_side = connection.settings_dict["OPTIONS"].get("server_side_binding") is True
    params["cursor_factory"] = psycopg.AsyncCursor if server_side else psycopg.AsyncClientCursor
    params["prepare_threshold"] = None
    role = connection.settings_dict["OPTIONS"].get("assume_role")
    return params, connection.timezone_name, role


_judges: PerLoop[ScopeJudge] = PerLoop(ScopeJudge)


def judge_for(using: str) -> ScopeJudge:
    """The judge of the running event loop for the database ``using``."""
    return _judges.get(using)


#: What a per-request scope hook may return for a channel.
ScopeSpec = models.QuerySet | Callable[[Any], bool] | None
