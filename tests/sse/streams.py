"""A client of pgpubsub.sse streams for tests: reads Django's AsyncClient responses."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connections
from django.test import AsyncClient


def run(coro: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Any:
    """Run a scenario in a new event loop (so with a new hub), within ``timeout`` seconds."""

    async def bounded() -> Any:
        try:
            return await asyncio.wait_for(coro(), timeout)
        finally:
            # The thread sync_to_async runs the ORM in keeps its connection.
            await sync_to_async(connections.close_all)()

    return asyncio.run(bounded())


class Message(dict):
    """One server-sent message: its fields (id, event, data, retry) and comments."""

    @property
    def json(self) -> Any:
        return json.loads(self["data"])


class Stream:
    """The body of an event stream response, read message by message."""

    def __init__(self, response: Any) -> None:
        self.response = response
        self.body = response.streaming_content.__aiter__()
        self.buffer = b""
        #: Everything received, as bytes.
        self.raw = b""
        self.ended = False
        #: The id of the last message that had one (what EventSource sends back).
        self.last_id: str | None = None

    async def message(self, timeout: float = 10.0) -> Message | None:
        """The next message (comments included), or None at the end of the stream."""
        while b"\n\n" not in self.buffer:
            try:
                chunk = await asyncio.wait_for(self.body.__anext__(), timeout)
            except StopAsyncIteration:
                self.ended = True
                return None
            self.buffer += chunk
            self.raw += chunk
        block, self.buffer = self.buffer.split(b"\n\n", 1)
        message = Message(comments=[])
        for line in block.decode().split("\n"):
            if line.startswith(":"):
                message["comments"].append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            message[name] = value[1:] if value.startswith(" ") else value
        if "id" in message:
            self.last_id = message["id"]
        return message

    async def events(self, count: int, timeout: float = 10.0) -> list[Message]:
        """The next ``count`` messages that carry data (skipping ids, heartbeats)."""
        found: list[Message] = []
        while len(found) < count:
            message = await self.message(timeout)
            if message is None:
                raise AssertionError(f"the stream ended after {len(found)} of {count} events")
            if "data" in message:
                found.append(message)
        return found

    async def close(self) -> None:
        await self.body.aclose()  # type: ignore[attr-defined]


async def open_stream(
    path: str, last_event_id: str | None = None, client: AsyncClient | None = None
) -> Stream:
    """GET ``path`` and read up to the moment the stream is subscribed.

    A fresh stream (no position) says so with a message carrying only its
    starting ``id``; a resumed one starts serving right after ``retry``.
    """
    client = client or AsyncClient()
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    response = await client.get(path, headers=headers)
    assert response.status_code == 200, (response.status_code, getattr(response, "content", b""))
    assert response["Content-Type"] == "text/event-stream"
    stream = Stream(response)
    first = await stream.message()
    assert first is not None and "retry" in first, first
    if last_event_id is None and "last_event_id=" not in path:
        ready = await stream.message()
        assert ready is not None and set(ready) == {"id", "comments"}, ready
    return stream
