"""pgpubsub.subscribe(): the hub, positions, resume, on the real database."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.db import connections

import pgpubsub
from pgpubsub import retention
from pgpubsub.hub import HUB_APPLICATION_NAME
from tests.app.channels import (
    DurableGreeting,
    Greeting,
    RetainedAuthorChannel,
    RetainedGreeting,
    Unheard,
)
from tests.app.models import Author
from tests.conftest import db_url, key_holders, sessions_named

pytestmark = pytest.mark.django_db(transaction=True)


def run(coro: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    """Run a scenario in a new event loop (so with a new hub), within ``timeout`` seconds."""

    async def bounded() -> Any:
        try:
            return await asyncio.wait_for(coro(), timeout)
        finally:
            # The thread sync_to_async runs the ORM in keeps its connection.
            await sync_to_async(connections.close_all)()

    return asyncio.run(bounded())


async def take(events: Any, count: int) -> list[pgpubsub.Event]:
    got = []
    async for event in events:
        got.append(event)
        if len(got) == count:
            break
    return got


def test_live_events_of_a_retained_trigger_channel_without_listeners():
    async def scenario() -> list[pgpubsub.Event]:
        async with pgpubsub.subscribe(RetainedAuthorChannel) as events:
            author = await sync_to_async(Author.objects.create)(name="ada")
            await sync_to_async(Author.objects.filter(pk=author.pk).update)(name="ada l.")
            await sync_to_async(Author.objects.filter(pk=author.pk).delete)()
            return await take(events, 3)

    got = run(scenario)
    assert [event.op for event in got] == ["INSERT", "UPDATE", "DELETE"]
    assert got[0].kwargs["old"] is None and got[0].kwargs["new"].name == "ada"
    assert got[1].kwargs["old"].name == "ada" and got[1].kwargs["new"].name == "ada l."
    assert got[2].kwargs["new"] is None and got[2].kwargs["old"].name == "ada l."
    assert all(event.channel is RetainedAuthorChannel for event in got)
    assert len({event.id for event in got}) == 3


def test_resume_from_an_event_id_gives_every_later_event_once():
    async def first() -> list[pgpubsub.Event]:
        async with pgpubsub.subscribe(RetainedGreeting) as events:
            for n in range(5):
                await sync_to_async(pgpubsub.notify)(RetainedGreeting, message=f"m{n}")
            return await take(events, 5)

    got = run(first)
    assert [e.kwargs["message"] for e in got] == [f"m{n}" for n in range(5)]

    async def resumed() -> list[pgpubsub.Event]:
        async with pgpubsub.subscribe(RetainedGreeting, since=got[1].id) as events:
            await sync_to_async(pgpubsub.notify)(RetainedGreeting, message="live")
            return await take(events, 4)

    again = run(resumed)
    assert [e.kwargs["message"] for e in again] == ["m2", "m3", "m4", "live"]


def _publish(conn: psycopg.Connection[Any], message: str) -> None:
    conn.execute(
        "SELECT pgpubsub_publish_v2(%s, %s, %s, %s::json)",
        [
            RetainedGreeting.listen_safe_name(),
            RetainedGreeting.wake_key(),
            RetainedGreeting.publish_flags(),
            f'[{{"kwargs": {{"message": "{message}"}}}}]',
        ],
    )


def test_a_transaction_that_commits_late_is_not_skipped():
    # A writes first (lower id, lower xid) but commits after B. A reader that
    # went by insertion ids alone would hand out B, remember B's id, and
    # never see A. The subscriber hands out A first, then B.
    url = db_url()
    start = pgpubsub.checkpoint()
    with psycopg.connect(url) as a, psycopg.connect(url) as b:
        _publish(a, "a")
        _publish(b, "b")
        b.commit()

        async def scenario() -> list[pgpubsub.Event]:
            async with pgpubsub.subscribe(RetainedGreeting, since=start) as events:
                first = asyncio.ensure_future(take(events, 1))
                # B is committed, but must not come before A, which is not.
                done, _ = await asyncio.wait({first}, timeout=0.5)
                assert not done, "an event was handed out while an older writer was running"
                await sync_to_async(a.commit)()
                got = await first
                got += await take(events, 1)
                return got

        got = run(scenario)
    assert [e.kwargs["message"] for e in got] == ["a", "b"]

    async def resumed(since: str) -> list[str]:
        async with pgpubsub.subscribe(RetainedGreeting, since=since) as events:
            await sync_to_async(pgpubsub.notify)(RetainedGreeting, message="marker")
            seen = []
            async for event in events:
                seen.append(event.kwargs["message"])
                if seen[-1] == "marker":
                    return seen
        return seen

    assert run(lambda: resumed(got[0].id)) == ["b", "marker"]
    assert run(lambda: resumed(got[1].id)) == ["marker"]


# -- bad input -------------------------------------------------------------------


def test_since_needs_channels_with_retention():
    with pytest.raises(pgpubsub.SubscriptionError, match=r"Greeting has no `retention`"):
        pgpubsub.subscribe(Greeting, since=pgpubsub.checkpoint())


def test_a_durable_channel_without_retention_cannot_be_subscribed():
    with pytest.raises(pgpubsub.SubscriptionError, match="DurableGreeting is durable"):
        pgpubsub.subscribe(DurableGreeting)


def test_a_trigger_channel_without_listeners_or_retention_is_refused():
    with pytest.raises(pgpubsub.SubscriptionError, match="neither listeners nor `retention`"):
        pgpubsub.subscribe(Unheard)


def test_something_that_is_not_a_channel_is_refused():
    with pytest.raises(pgpubsub.ChannelNotFound):
        pgpubsub.subscribe("tests.app.models.Author")


@pytest.mark.parametrize(
    ("since", "match"),
    [
        ("yesterday", "not an event id"),
        (12, "a checkpoint is the string of an event id"),
        ("1.2.ffff", "belongs to another database"),
    ],
)
def test_a_malformed_or_foreign_since_is_refused(since, match):
    async def scenario() -> None:
        async with pgpubsub.subscribe(RetainedGreeting, since=since):
            raise AssertionError("subscribed")

    with pytest.raises(pgpubsub.InvalidCheckpoint, match=match):
        run(scenario)


def test_subscribe_from_sync_code_says_to_use_async_with():
    with pytest.raises(TypeError, match="async with"), pgpubsub.subscribe(RetainedGreeting):
        pass


# -- one process, many subscribers ---------------------------------------------------


def _hub_connections() -> int:
    return sessions_named(HUB_APPLICATION_NAME)


def test_subscribers_share_one_connection_and_one_decoded_event():
    async def scenario() -> tuple[int, list[list[pgpubsub.Event]]]:
        async with contextlib.AsyncExitStack() as stack:
            subscribers = [
                await stack.enter_async_context(pgpubsub.subscribe(RetainedGreeting))
                for _ in range(10)
            ]
            await sync_to_async(pgpubsub.notify)(RetainedGreeting, message="to all")
            got = [await take(events, 1) for events in subscribers]
            connections_held = await sync_to_async(_hub_connections)()
        return connections_held, got

    held, got = run(scenario)
    assert held == 1
    first = got[0][0]
    assert all(events[0] is first for events in got)
    assert first.kwargs == {"message": "to all"}


# -- slow subscribers, expiry, reconnects ---------------------------------------------


def test_a_slow_subscriber_is_cut_off_with_a_position_that_loses_nothing():
    async def scenario() -> tuple[list[str], str | None]:
        async with pgpubsub.subscribe(RetainedGreeting, max_queue=3) as events:
            for n in range(10):
                await sync_to_async(pgpubsub.notify)(RetainedGreeting, message=f"m{n}")
            seen: list[str] = []
            with pytest.raises(pgpubsub.SubscriberTooSlow) as caught:
                async for event in events:
                    seen.append(event.kwargs["message"])
                    if len(seen) == 1:
                        # Fall behind: let the hub fill the queue past max_queue.
                        await asyncio.sleep(0)
                        await _until(lambda: events.ended is not None)
            return seen, caught.value.last_id

    seen, last_id = run(scenario)
    assert seen[0] == "m0"
    assert last_id is not None

    async def resumed() -> list[str]:
        async with pgpubsub.subscribe(RetainedGreeting, since=last_id) as events:
            return [event.kwargs["message"] for event in await take(events, 10 - len(seen))]

    assert seen + run(resumed) == [f"m{n}" for n in range(10)]


async def _until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        await asyncio.sleep(0.01)


def test_a_position_older_than_the_retention_window_is_refused():
    async def publish() -> list[pgpubsub.Event]:
        async with pgpubsub.subscribe(RetainedGreeting) as events:
            for n in range(3):
                await sync_to_async(pgpubsub.notify)(RetainedGreeting, message=f"old{n}")
            return await take(events, 3)

    old = run(publish)
    with psycopg.connect(db_url(), autocommit=True) as conn:
        conn.execute(
            "UPDATE pgpubsub_event SET created_at = now() - interval '2 hours' WHERE channel = %s",
            [RetainedGreeting.listen_safe_name()],
        )
        assert retention.trim(conn) >= 3

    async def resume() -> None:
        async with pgpubsub.subscribe(RetainedGreeting, since=old[0].id):
            raise AssertionError("resumed from an expired position")

    with pytest.raises(pgpubsub.CheckpointExpired) as caught:
        run(resume)
    assert caught.value.channel == RetainedGreeting.name()
    assert caught.value.oldest == old[-1].id
    assert RetainedGreeting.name() in str(caught.value)

    async def from_oldest() -> list[str]:
        async with pgpubsub.subscribe(RetainedGreeting, since=caught.value.oldest) as events:
            await sync_to_async(pgpubsub.notify)(RetainedGreeting, message="new")
            return [event.kwargs["message"] for event in await take(events, 1)]

    assert run(from_oldest) == ["new"]


def test_after_a_lost_connection_retained_channels_continue_and_others_are_told():
    async def scenario() -> tuple[list[str], type[BaseException]]:
        async with (
            pgpubsub.subscribe(RetainedGreeting) as kept,
            pgpubsub.subscribe(Greeting) as live,
        ):
            await sync_to_async(pgpubsub.notify)(RetainedGreeting, message="before")
            await take(kept, 1)
            with psycopg.connect(db_url(), autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    [HUB_APPLICATION_NAME],
                )
            await sync_to_async(pgpubsub.notify)(RetainedGreeting, message="during")
            await sync_to_async(pgpubsub.notify)(RetainedGreeting, message="after")
            got = [event.kwargs["message"] for event in await take(kept, 2)]
            with pytest.raises(pgpubsub.EventsMayBeMissed) as caught:
                await take(live, 1)
            return got, type(caught.value)

    got, error = run(scenario)
    assert got == ["during", "after"]
    assert error is pgpubsub.EventsMayBeMissed


def test_resuming_far_back_replays_in_order_while_live_events_arrive():
    async def scenario() -> list[str]:
        start = await pgpubsub.acheckpoint()
        for n in range(250):
            await sync_to_async(pgpubsub.notify)(RetainedGreeting, message=f"r{n}")
        async with pgpubsub.subscribe(RetainedGreeting) as live:
            # The hub is now past the 250 events.
            await sync_to_async(pgpubsub.notify)(RetainedGreeting, message="live0")
            await take(live, 1)
            async with pgpubsub.subscribe(RetainedGreeting, since=start) as events:
                await sync_to_async(pgpubsub.notify)(RetainedGreeting, message="live1")
                return [event.kwargs["message"] for event in await take(events, 252)]

    got = run(scenario, timeout=60)
    assert got == [f"r{n}" for n in range(250)] + ["live0", "live1"]


def test_a_steady_stream_reaches_many_subscribers_whole():
    # Events paced so that the hub goes to sleep between most of them: each
    # one wakes it, and it must never fall asleep without its key (a lost
    # wake-up leaves events waiting for the safety poll, a minute away).
    count, subscribers, rate = 1000, 100, 200.0

    def produce() -> None:
        with psycopg.connect(db_url(), autocommit=True) as conn:
            started = time.monotonic()
            for n in range(count):
                _publish(conn, f"s{n}")
                time.sleep(max(0.0, started + (n + 1) / rate - time.monotonic()))

    async def scenario() -> list[list[str]]:
        async with contextlib.AsyncExitStack() as stack:
            subscriptions = [
                await stack.enter_async_context(pgpubsub.subscribe(RetainedGreeting))
                for _ in range(subscribers)
            ]
            producer = asyncio.get_running_loop().run_in_executor(None, produce)
            received = await asyncio.gather(*(take(events, count) for events in subscriptions))
            await producer
        return [[event.kwargs["message"] for event in events] for events in received]

    expected = [f"s{n}" for n in range(count)]
    assert all(messages == expected for messages in run(scenario, timeout=count / rate + 20))


def test_a_hub_that_stops_hands_its_keys_over_to_other_readers():
    # A worker or hub that relied on this hub's key to be woken would sleep
    # until its next poll once the hub is gone; the hub gives the key back
    # and NOTIFYs on its way out, so they ask for the key again.
    name = RetainedGreeting.listen_safe_name()

    def hub_holds_the_key() -> int | None:
        held = key_holders(RetainedGreeting.wake_key(), HUB_APPLICATION_NAME)
        return held[0][0] if held else None

    with psycopg.connect(db_url(), autocommit=True) as watcher:
        watcher.execute(f"LISTEN {name}")

        async def scenario() -> int:
            async with pgpubsub.subscribe(RetainedGreeting):
                deadline = time.monotonic() + 10
                while (pid := await sync_to_async(hub_holds_the_key)()) is None:
                    assert time.monotonic() < deadline, "the hub never took the key"
                    await asyncio.sleep(0.02)
                return pid

        holder = run(scenario)
        handed_over = list(watcher.notifies(timeout=5, stop_after=1))
        assert [(n.channel, n.payload, n.pid) for n in handed_over] == [(name, "", holder)]
        assert hub_holds_the_key() is None
