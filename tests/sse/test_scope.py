"""Scopes: tenants' streams, the judging of event rows, and scopes that cannot be judged."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import pytest
from asgiref.sync import sync_to_async
from django.db.models import Count, F, Value
from django.db.models.functions import Concat
from django.test import AsyncClient

import pgpubsub
from pgpubsub import scope as scope_module
from pgpubsub.exceptions import ScopeError
from pgpubsub.hub import Event
from pgpubsub.scope import RowScope, judge_for
from pgpubsub.wire import Event as WireEvent
from tests.app.channels import AuthorChannel, NoteChannel, RetainedGreeting
from tests.app.models import Author, Note, Post, Tenant
from tests.sse.streams import open_stream, run

pytestmark = pytest.mark.django_db(transaction=True)


# -- two tenants ---------------------------------------------------------------------


def _changes(a: Tenant, b: Tenant) -> dict[str, int]:
    """Creates, bulk updates, moves between tenants and bulk deletes; returns the notes' pks."""
    notes = Note.objects.bulk_create(
        [
            Note(tenant=a, title="A-1", secret="sa1"),
            Note(tenant=a, title="A-2", secret="sa2"),
            Note(tenant=b, title="B-1", secret="sb1"),
            Note(tenant=b, title="B-2", secret="sb2"),
        ]
    )
    pks = {note.title: note.pk for note in notes}
    Note.objects.update(title=Concat(F("title"), Value("!")), secret="changed")
    Note.objects.filter(pk=pks["B-1"]).update(tenant=a)  # into A's scope
    Note.objects.filter(pk=pks["A-2"]).update(tenant=b)  # out of A's scope
    Note.objects.all().delete()  # judged on the old rows
    Note.objects.create(tenant=a, title="A-end")
    Note.objects.create(tenant=b, title="B-end")
    return pks


@pytest.mark.parametrize("hook", ["sync", "async"])
def test_a_tenant_stream_never_carries_another_tenants_rows(hook):
    a = Tenant.objects.create(name="a")
    b = Tenant.objects.create(name="b")
    suffix = "" if hook == "sync" else "async/"

    async def scenario() -> tuple[dict[str, int], list[Any], list[Any], bytes, bytes]:
        stream_a = await open_stream(f"/live/tenant/{a.pk}/notes/{suffix}")
        stream_b = await open_stream(f"/live/tenant/{b.pk}/notes/{suffix}")
        pks = await sync_to_async(_changes)(a, b)
        seen = []
        for stream in (stream_a, stream_b):
            got = []
            while not got or got[-1]["new"] != {
                "title": "A-end" if stream is stream_a else "B-end"
            }:
                (message,) = await stream.events(1)
                got.append(message.json)
            seen.append(got)
            await stream.close()
        return pks, seen[0], seen[1], stream_a.raw, stream_b.raw

    pks, got_a, got_b, raw_a, raw_b = run(scenario)

    def message(op: str, pk: int, old: str | None, new: str | None) -> dict[str, Any]:
        return {
            "op": op,
            "model": "app.note",
            "pk": pk,
            "old": None if old is None else {"title": old},
            "new": None if new is None else {"title": new},
        }

    a1, a2, b1, b2 = pks["A-1"], pks["A-2"], pks["B-1"], pks["B-2"]
    # B-1 moving in arrives as an insert without its old (tenant B) row; A-2
    # moving out as a delete without its new one; deletes are judged on the
    # old rows. (Rows of one statement may come in any order.)
    assert _by_kind(got_a[:-1]) == _by_kind(
        [
            message("INSERT", a1, None, "A-1"),
            message("INSERT", a2, None, "A-2"),
            message("UPDATE", a1, "A-1", "A-1!"),
            message("UPDATE", a2, "A-2", "A-2!"),
            message("INSERT", b1, None, "B-1!"),
            message("DELETE", a2, "A-2!", None),
            message("DELETE", a1, "A-1!", None),
            message("DELETE", b1, "B-1!", None),
        ]
    )
    assert _by_kind(got_b[:-1]) == _by_kind(
        [
            message("INSERT", b1, None, "B-1"),
            message("INSERT", b2, None, "B-2"),
            message("UPDATE", b1, "B-1", "B-1!"),
            message("UPDATE", b2, "B-2", "B-2!"),
            message("DELETE", b1, "B-1!", None),
            message("INSERT", a2, None, "A-2!"),
            message("DELETE", a2, "A-2!", None),
            message("DELETE", b2, "B-2!", None),
        ]
    )
    # Nothing of the other tenant's rows, in any form, and no unchosen column.
    for raw, other in ((raw_a, b"B-2"), (raw_b, b"A-1")):
        assert other not in raw
        assert b"secret" not in raw and b"changed" not in raw and b"tenant" not in raw


def _by_kind(messages: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return sorted((m["op"], m["pk"], str(m["old"]), str(m["new"])) for m in messages)


def test_the_clients_of_one_scope_share_its_judging(monkeypatch):
    tenant = Tenant.objects.create(name="shared")
    statements: list[str] = []
    fetch = scope_module.ScopeJudge._fetch

    async def counting(self: Any, statement: str, params: list[Any]) -> Any:
        statements.append(statement)
        return await fetch(self, statement, params)

    monkeypatch.setattr(scope_module.ScopeJudge, "_fetch", counting)

    async def scenario() -> list[list[Any]]:
        streams = [await open_stream(f"/live/tenant/{tenant.pk}/notes/") for _ in range(10)]
        statements.clear()
        await sync_to_async(Note.objects.bulk_create)(
            [Note(tenant=tenant, title=f"n{n}") for n in range(5)]
        )
        got = [[e.json["pk"] for e in await stream.events(5)] for stream in streams]
        for stream in streams:
            await stream.close()
        return got

    got = run(scenario)
    assert all(pks == got[0] for pks in got) and len(got[0]) == 5
    # One bulk insert is one batch: judged once for ten clients.
    assert len(statements) == 1


def test_an_app_channel_is_scoped_by_a_function_of_the_event():
    async def scenario() -> list[str]:
        stream = await open_stream("/live/greetings/prefix/?prefix=yes")
        for message in ("yes 1", "no 2", "yes 3"):
            await sync_to_async(pgpubsub.notify)(RetainedGreeting, message=message)
        got = [e.json["message"] for e in await stream.events(2)]
        await stream.close()
        return got

    assert run(scenario) == ["yes 1", "yes 3"]


# -- how rows are judged ---------------------------------------------------------------


def _event(number: int, op: str, old: dict | None, new: dict | None) -> Event:
    def row(values: dict | None) -> dict[str, msgspec.Raw] | None:
        if values is None:
            return None
        return {key: msgspec.Raw(msgspec.json.encode(value)) for key, value in values.items()}

    return Event(
        id=f"{number}.1.0000",
        channel=NoteChannel,
        op=op,
        kwargs={},
        trigger=None,
        context=None,
        created_at=0.0,
        wire=WireEvent(op=op, old=row(old), new=row(new)),
    )


def _judge(queryset: Any, channel: Any, events: list[Event]) -> list[tuple[bool, bool]]:
    scope = RowScope.from_queryset(queryset, channel, "default")

    async def scenario() -> list[tuple[bool, bool]]:
        return await judge_for("default").verdicts(scope, events)

    return run(scenario)


def test_rows_are_judged_as_the_event_carries_them_not_as_the_table_is_now():
    a = Tenant.objects.create(name="a")
    gone = {"id": 999, "tenant_id": a.pk, "title": "deleted long ago", "secret": ""}
    elsewhere = {**gone, "tenant_id": a.pk + 1}
    events = [
        _event(1, "DELETE", gone, None),
        _event(2, "UPDATE", gone, elsewhere),
        _event(3, "INSERT", None, elsewhere),
    ]
    assert _judge(Note.objects.filter(tenant=a), NoteChannel, events) == [
        (True, False),
        (True, False),
        (False, False),
    ]


def test_joined_tables_are_read_as_they_are_when_the_event_is_judged():
    a = Tenant.objects.create(name="active")
    row = {"id": 5, "tenant_id": a.pk, "title": "t", "secret": ""}
    events = [_event(1, "INSERT", None, row)]
    assert _judge(Note.objects.filter(tenant__name="active"), NoteChannel, events) == [
        (False, True)
    ]
    Tenant.objects.filter(pk=a.pk).update(name="renamed")
    assert _judge(Note.objects.filter(tenant__name="active"), NoteChannel, events) == [
        (False, False)
    ]


def test_each_row_is_judged_on_its_own_with_grouping_and_self_references():
    ada = Author.objects.create(name="ada", age=30)
    Post.objects.create(author=ada, title="p")
    old = {"id": ada.pk, "name": "ada", "age": 30, "bio": ""}
    new = {"id": ada.pk, "name": "ada b.", "age": 31, "bio": ""}
    other = {"id": ada.pk + 100, "name": "bob", "age": 30, "bio": ""}
    events = [_event(1, "UPDATE", old, new), _event(2, "INSERT", None, other)]
    # Grouping is per row: the two rows of ada's event are not one group.
    with_posts = Author.objects.annotate(n=Count("post")).filter(n__gte=1)
    assert _judge(with_posts, AuthorChannel, events) == [(True, True), (False, False)]
    # The model's table read again (a subquery) is the real table, not the event rows.
    same_age_as_real = Author.objects.filter(age__in=Author.objects.values("age"))
    assert _judge(same_age_as_real, AuthorChannel, events) == [(True, False), (False, True)]
    assert _judge(Author.objects.none(), AuthorChannel, events) == [(False, False)] * 2
    assert _judge(Author.objects.all(), AuthorChannel, events) == [(True, True), (False, True)]


@pytest.mark.parametrize(
    ("queryset", "match"),
    [
        (lambda: Note.objects.all()[:5], "sliced"),
        (lambda: Note.objects.filter(pk=1).union(Note.objects.filter(pk=2)), "union"),
        (lambda: Note.objects.order_by("title").distinct("title"), r"distinct\(\*fields\)"),
        (lambda: Author.objects.all(), "QuerySet of app.Author"),
        (lambda: [1, 2], "must be a QuerySet of app.Note"),
    ],
)
def test_scopes_that_cannot_be_judged_are_refused_when_built(queryset, match):
    with pytest.raises(ScopeError, match=match):
        RowScope.from_queryset(queryset(), NoteChannel, "default")


def test_a_scope_of_another_model_answers_500_without_a_traceback(caplog):
    async def scenario() -> Any:
        return await AsyncClient().get("/live/wrong-scope/")

    with caplog.at_level(logging.ERROR, logger="pgpubsub"):
        response = run(scenario)
    assert response.status_code == 500
    assert b"Traceback" not in response.content
    assert b"server log" in response.content
    assert "QuerySet of app.Author" in caplog.text
