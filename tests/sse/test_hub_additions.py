"""What pgpubsub.sse needs from the hub: batches, lossless timeouts, long replays, start ids."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from asgiref.sync import sync_to_async

import pgpubsub
from tests.app.channels import RetainedGreeting
from tests.sse.streams import run

pytestmark = pytest.mark.django_db(transaction=True)


def _publish(*messages: str) -> None:
    for message in messages:
        pgpubsub.notify(RetainedGreeting, message=message)


def test_next_batch_times_out_empty_and_loses_nothing_to_timeouts_or_cancellation():
    async def scenario() -> tuple[list[str], list[str]]:
        async with pgpubsub.subscribe(RetainedGreeting) as events:
            assert await events.next_batch(10, timeout=0.05) == []
            # Cancelled while waiting: the pending get is kept for the next call.
            waiting = asyncio.ensure_future(events.next_batch(10))
            await asyncio.sleep(0)
            waiting.cancel()
            await sync_to_async(_publish)("a", "b", "c")
            got: list[str] = []
            while len(got) < 3:
                got += [e.kwargs["message"] for e in await events.next_batch(2, timeout=5)]
            return got, [events.last_id or ""]

    got, _ = run(scenario)
    assert got == ["a", "b", "c"]


def test_timeouts_keep_their_length_while_one_timer_serves_a_stream_of_events():
    # A stream waits "for the next event, or a heartbeat from now" after
    # every event. One timer serves those waits; each still lasts its own
    # timeout, whether an earlier, shorter or longer, timer is pending.
    async def scenario() -> dict[str, object]:
        loop = asyncio.get_running_loop()
        async with pgpubsub.subscribe(RetainedGreeting) as events:
            timers = set()
            for n in range(3):
                await sync_to_async(_publish)(f"m{n}")
                batch = await events.next_batch(10, timeout=30)
                assert [e.kwargs["message"] for e in batch] == [f"m{n}"]
                timers.add(id(events._timer))
            # A shorter timeout than the pending timer's: on time, not 30 s later.
            started = loop.time()
            assert await events.next_batch(10, timeout=0.2) == []
            short = loop.time() - started
            # A longer one than a timer left pending by a cancelled wait: not
            # cut short by it.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(events.next_batch(10, timeout=0.05), 0.01)
            assert events._timer is not None
            started = loop.time()
            assert await events.next_batch(10, timeout=0.3) == []
            long = loop.time() - started
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(events.next_batch(10, timeout=30), 0.01)
            assert events._timer is not None
        return {"timers": len(timers), "short": short, "long": long, "left": events._timer}

    result = run(scenario)
    assert result["timers"] == 1
    assert 0.2 <= result["short"] < 5  # type: ignore[operator]
    assert 0.3 <= result["long"] < 5  # type: ignore[operator]
    assert result["left"] is None  # the subscription's end cancels its timer


def test_a_batch_holds_what_waits_up_to_the_limit():
    async def scenario() -> list[list[str]]:
        async with pgpubsub.subscribe(RetainedGreeting) as events:
            await sync_to_async(_publish)(*(f"m{n}" for n in range(5)))
            batches = []
            taken = 0
            while taken < 5:
                batch = await events.next_batch(3, timeout=5)
                taken += len(batch)
                batches.append([e.kwargs["message"] for e in batch])
            return batches

    batches = run(scenario)
    assert [m for batch in batches for m in batch] == [f"m{n}" for n in range(5)]
    assert all(1 <= len(batch) <= 3 for batch in batches)


def test_resuming_further_back_than_the_queue_holds_does_not_wait_for_the_reader():
    # The replay fills the queue while the caller reads: __aenter__ returns
    # at once instead of waiting for a replay that waits for the reader.
    async def scenario() -> list[str]:
        start = await pgpubsub.acheckpoint()
        await sync_to_async(_publish)(*(f"r{n}" for n in range(20)))
        async with pgpubsub.subscribe(RetainedGreeting, since=start, max_queue=3) as events:
            await sync_to_async(_publish)("live")
            got: list[str] = []
            async for event in events:
                got.append(event.kwargs["message"])
                if len(got) == 21:
                    return got
        return got

    assert run(scenario, timeout=20) == [f"r{n}" for n in range(20)] + ["live"]


def test_start_id_resumes_where_the_subscription_started():
    async def scenario() -> list[str]:
        async with pgpubsub.subscribe(RetainedGreeting) as events:
            start = events.start_id
        await sync_to_async(_publish)("after start")
        async with pgpubsub.subscribe(RetainedGreeting, since=start) as events:
            return [(await events.next_batch(1, timeout=5))[0].kwargs["message"]]

    assert run(scenario) == ["after start"]


def test_events_carry_the_stored_payload():
    async def scenario() -> pgpubsub.Event:
        async with pgpubsub.subscribe(RetainedGreeting) as events:
            await sync_to_async(_publish)("raw")
            return (await events.next_batch(1, timeout=5))[0]

    event = run(scenario)
    assert event.wire is not None
    assert bytes(event.wire.kwargs) == b'{"message":"raw"}'
