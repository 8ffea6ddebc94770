"""pgpubsub.sse.EventStreamView: the stream, its JSON, resume and resets, on the real database."""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async

import pgpubsub
from tests.app.channels import NoteChannel, RetainedGreeting
from tests.app.models import Note, Tenant
from tests.sse.streams import open_stream, run

pytestmark = pytest.mark.django_db(transaction=True)


def _tenant(name: str = "acme") -> Tenant:
    return Tenant.objects.create(name=name)


def test_trigger_events_carry_the_primary_key_alone_by_default():
    tenant = _tenant()

    async def scenario():
        stream = await open_stream("/live/notes/")
        note = await sync_to_async(Note.objects.create)(tenant=tenant, title="t", secret="hush")
        await sync_to_async(Note.objects.filter(pk=note.pk).update)(title="u")
        await sync_to_async(Note.objects.filter(pk=note.pk).delete)()
        events = await stream.events(3)
        await stream.close()
        return note.pk, events, stream.raw

    pk, events, raw = run(scenario)
    assert [e["event"] for e in events] == [NoteChannel.name()] * 3
    assert [e.json for e in events] == [
        {"op": "INSERT", "model": "app.note", "pk": pk, "old": None, "new": {"id": pk}},
        {"op": "UPDATE", "model": "app.note", "pk": pk, "old": {"id": pk}, "new": {"id": pk}},
        {"op": "DELETE", "model": "app.note", "pk": pk, "old": {"id": pk}, "new": None},
    ]
    assert b"hush" not in raw and b"title" not in raw


def test_trigger_events_carry_the_chosen_fields_only():
    tenant = _tenant()

    async def scenario():
        stream = await open_stream("/live/notes/titles/")
        note = await sync_to_async(Note.objects.create)(tenant=tenant, title="t", secret="hush")
        await sync_to_async(Note.objects.filter(pk=note.pk).update)(title="u", secret="hush2")
        events = await stream.events(2)
        await stream.close()
        return note.pk, events, stream.raw

    pk, events, raw = run(scenario)
    assert [e.json for e in events] == [
        {"op": "INSERT", "model": "app.note", "pk": pk, "old": None, "new": {"title": "t"}},
        {
            "op": "UPDATE",
            "model": "app.note",
            "pk": pk,
            "old": {"title": "t"},
            "new": {"title": "u"},
        },
    ]
    assert b"hush" not in raw and b"tenant" not in raw


def test_an_event_id_is_the_subscription_position_and_app_channels_send_their_fields():
    async def scenario():
        stream = await open_stream("/live/greetings/")
        await sync_to_async(pgpubsub.notify)(RetainedGreeting, message="hello")
        (event,) = await stream.events(1)
        await stream.close()
        async with pgpubsub.subscribe(RetainedGreeting, since=event["id"]) as events:
            await sync_to_async(pgpubsub.notify)(RetainedGreeting, message="after")
            async for later in events:
                return event, later

    event, later = run(scenario)
    assert event["event"] == RetainedGreeting.name()
    assert event.json == {"message": "hello"}
    assert later.kwargs == {"message": "after"}


# -- resume, resets, heartbeats, slow clients ----------------------------------------


def _notes(tenant: Tenant, *titles: str) -> list[int]:
    return [Note.objects.create(tenant=tenant, title=title).pk for title in titles]


@pytest.mark.parametrize("how", ["header", "query"])
def test_a_reconnecting_client_gets_exactly_what_it_missed(how):
    tenant = _tenant()

    async def scenario():
        stream = await open_stream("/live/notes/titles/")
        await sync_to_async(_notes)(tenant, "n1", "n2")
        seen = await stream.events(2)
        await stream.close()
        # Committed while the client is away.
        await sync_to_async(_notes)(tenant, "n3", "n4")
        if how == "header":
            again = await open_stream("/live/notes/titles/", last_event_id=stream.last_id)
        else:
            again = await open_stream(f"/live/notes/titles/?last_event_id={stream.last_id}")
        await sync_to_async(_notes)(tenant, "n5")
        caught_up = await again.events(3)
        await again.close()
        return seen, caught_up

    seen, caught_up = run(scenario)
    titles = [e.json["new"]["title"] for e in seen + caught_up]
    assert titles == ["n1", "n2", "n3", "n4", "n5"]
    assert all(e.get("event") != "reset" for e in caught_up)


def test_the_header_wins_over_the_query_parameter():
    # EventSource reconnects to the same URL (with the first position in it)
    # and sends its latest position in Last-Event-ID.
    tenant = _tenant()

    async def scenario():
        start = await pgpubsub.acheckpoint()
        await sync_to_async(_notes)(tenant, "old1", "old2")
        stream = await open_stream(f"/live/notes/titles/?last_event_id={start}")
        first = await stream.events(1)
        await stream.close()
        again = await open_stream(
            f"/live/notes/titles/?last_event_id={start}", last_event_id=first[0]["id"]
        )
        rest = await again.events(1)
        await again.close()
        return first + rest

    got = run(scenario)
    assert [e.json["new"]["title"] for e in got] == ["old1", "old2"]


def test_a_position_past_retention_sends_a_reset_then_live_events():
    import psycopg

    from pgpubsub import retention
    from tests.conftest import db_url

    tenant = _tenant()

    async def first():
        stream = await open_stream("/live/notes/titles/")
        await sync_to_async(_notes)(tenant, "gone")
        (event,) = await stream.events(1)
        await stream.close()
        return event["id"]

    old_id = run(first)
    with psycopg.connect(db_url(), autocommit=True) as conn:
        conn.execute(
            "UPDATE pgpubsub_event SET created_at = now() - interval '2 hours' WHERE channel = %s",
            [NoteChannel.listen_safe_name()],
        )
        assert retention.trim(conn) >= 1

    async def resumed():
        # The trimmed event was the last: resuming from before it has a gap.
        stream = await open_stream("/live/notes/titles/", last_event_id=_before(old_id))
        reset = await stream.message()
        await sync_to_async(_notes)(tenant, "fresh")
        (live,) = await stream.events(1)
        await stream.close()
        return reset, live

    reset, live = run(resumed)
    assert reset["event"] == "reset"
    assert "retention" in reset.json["reason"]
    assert reset["id"] and reset["id"] != old_id
    assert live.json["new"] == {"title": "fresh"}


def _before(event_id: str) -> str:
    """A position just before an event (its transaction's previous one)."""
    xid, _, tag = event_id.split(".")
    return f"{int(xid) - 1}.9223372036854775807.{tag}"


@pytest.mark.parametrize(
    ("position", "reason"),
    [
        ("garbage", "not an event id"),
        ("1.2.ffff", "belongs to another database"),
    ],
)
def test_a_bad_position_sends_a_reset_that_says_why(position, reason):
    tenant = _tenant()

    async def scenario():
        stream = await open_stream("/live/notes/titles/", last_event_id=position)
        reset = await stream.message()
        await sync_to_async(_notes)(tenant, "live")
        (live,) = await stream.events(1)
        await stream.close()
        return reset, live, stream.raw

    reset, live, raw = run(scenario)
    assert reset["event"] == "reset"
    assert reason in reset.json["reason"]
    assert b"Traceback" not in raw
    assert live.json["new"] == {"title": "live"}
    # The reset's id is a position the client can resume from.
    assert reset["id"].count(".") == 2


def test_a_stream_whose_channels_keep_no_events_resets_on_reconnect():
    async def scenario():
        stream = await open_stream("/live/broadcast-greetings/")
        position = stream.last_id
        await stream.close()
        again = await open_stream("/live/broadcast-greetings/", last_event_id=position)
        reset = await again.message()
        await again.close()
        return reset

    reset = run(scenario)
    assert reset["event"] == "reset"
    assert "retention" in reset.json["reason"]


def test_retry_and_heartbeats():
    async def scenario():
        stream = await open_stream("/live/notes/fast/")
        beat = await stream.message(timeout=5)
        await stream.close()
        return stream.raw, beat

    raw, beat = run(scenario)
    assert raw.startswith(b"retry: 3000\n\n")
    assert beat == {"comments": ["heartbeat"]}


def test_a_slow_client_is_cut_off_and_resumes_without_loss():
    tenant = _tenant()

    async def scenario():
        stream = await open_stream("/live/notes/slow-client/")
        async with pgpubsub.subscribe(NoteChannel) as witness:
            pks = await sync_to_async(_notes)(tenant, *(f"n{n}" for n in range(10)))
            # The hub offers each event to every subscriber at once: when the
            # witness has the tenth, the stream's queue (3) has overflowed.
            seen = 0
            async for _ in witness:
                seen += 1
                if seen == 10:
                    break
        first: list = []
        while (message := await stream.message()) is not None:
            if "data" in message:
                first.append(message)
        again = await open_stream("/live/notes/slow-client/", last_event_id=stream.last_id)
        rest = await again.events(10 - len(first))
        await again.close()
        return pks, first, rest

    pks, first, rest = run(scenario)
    assert 0 < len(first) < 10
    assert [e.json["pk"] for e in first + rest] == pks


def test_each_event_is_encoded_once_for_all_clients(monkeypatch):
    from pgpubsub import eventjson

    tenant = _tenant()
    encoded: list[str] = []
    data = eventjson.TriggerFormat.data

    def counting(self, event, variant):
        encoded.append(event.id)
        return data(self, event, variant)

    monkeypatch.setattr(eventjson.TriggerFormat, "data", counting)

    async def scenario():
        streams = [await open_stream("/live/notes/titles/") for _ in range(25)]
        await sync_to_async(_notes)(tenant, "a", "b", "c")
        got = [[e["data"] for e in await stream.events(3)] for stream in streams]
        for stream in streams:
            await stream.close()
        return got

    got = run(scenario)
    assert all(messages == got[0] for messages in got)
    assert len(encoded) == 3 and len(set(encoded)) == 3


def test_a_row_change_published_by_a_before_and_an_after_trigger_is_sent_once():
    # The test app's AuthorChannel has pre_* and post_* listeners: each
    # insert, update and delete is published by two triggers.
    from tests.app.models import Author

    async def scenario():
        stream = await open_stream("/live/authors/")
        author = await sync_to_async(Author.objects.create)(name="ada")
        await sync_to_async(Author.objects.filter(pk=author.pk).update)(name="ada l.")
        await sync_to_async(Author.objects.filter(pk=author.pk).delete)()
        await sync_to_async(Author.objects.create)(name="end")
        got = []
        while not got or got[-1].json["new"] != {"name": "end"}:
            got += await stream.events(1)
        await stream.close()
        return got

    got = run(scenario)
    assert [(e.json["op"], e.json["old"], e.json["new"]) for e in got] == [
        ("INSERT", None, {"name": "ada"}),
        ("UPDATE", {"name": "ada"}, {"name": "ada l."}),
        ("DELETE", {"name": "ada l."}, None),
        ("INSERT", None, {"name": "end"}),
    ]


def test_streams_that_end_together_run_their_end_on_one_shared_thread():
    # Through Django's own ASGI handler: each request gets a thread of its
    # own for its sync code (asgiref's ThreadSensitiveContext). A stream lets
    # it go when it starts, and the request_finished signal at its end runs
    # on the one thread every stream shares for that, so clients that leave
    # together do not start a thread each.
    from django.core.handlers.asgi import ASGIHandler
    from django.core.signals import request_finished

    ended_on: list[str] = []

    def record(**_: object) -> None:
        ended_on.append(threading.current_thread().name)

    async def one_stream(
        handler: ASGIHandler, started: asyncio.Event, leave: asyncio.Event
    ) -> bytes:
        body = b""
        requested = False

        async def receive() -> dict:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await leave.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            nonlocal body
            if message["type"] == "http.response.body":
                body += message.get("body", b"")
                if b"\nid: " in body:
                    started.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/live/notes/",
            "raw_path": b"/live/notes/",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"testserver"), (b"accept", b"text/event-stream")],
            "client": ("127.0.0.1", 40000),
            "server": ("testserver", 80),
        }
        await handler(scope, receive, send)
        return body

    async def scenario() -> list[bytes]:
        handler = ASGIHandler()
        leave = asyncio.Event()
        started = [asyncio.Event() for _ in range(20)]
        streams = [asyncio.create_task(one_stream(handler, s, leave)) for s in started]
        # Every stream has subscribed (sent its first id) before they all leave.
        await asyncio.wait_for(asyncio.gather(*(s.wait() for s in started)), 20)
        leave.set()
        return await asyncio.wait_for(asyncio.gather(*streams), 20)

    request_finished.connect(record)
    try:
        bodies = run(scenario)
    finally:
        request_finished.disconnect(record)
    assert all(body.startswith(b"retry: ") for body in bodies)
    assert len(ended_on) == 20
    assert set(ended_on) == {ended_on[0]}, set(ended_on)
    assert ended_on[0].startswith("pgpubsub-stream-end"), ended_on[0]
