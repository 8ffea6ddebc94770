"""pgpubsub.contrib.channels: events forwarded to Django Channels groups (in-memory layer)."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async

from pgpubsub.exceptions import StreamConfigurationError
from tests.app.channels import NoteChannel
from tests.app.models import Note, Tenant
from tests.sse.streams import run

layers = pytest.importorskip("channels.layers")
from pgpubsub.contrib.channels import forward_to_groups  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)


def _changes(tenants: list[Tenant]) -> None:
    a, b = tenants
    Note.objects.bulk_create([Note(tenant=a, title="a1", secret="s"), Note(tenant=b, title="b1")])
    Note.objects.update(title="renamed")


def test_events_reach_the_groups_chosen_per_event_with_the_chosen_fields_only():
    a = Tenant.objects.create(name="a")
    b = Tenant.objects.create(name="b")

    async def scenario() -> tuple[list[dict], list[dict]]:
        layer = layers.InMemoryChannelLayer()
        await layer.group_add(f"tenant-{a.pk}", "consumer-a")
        await layer.group_add(f"tenant-{b.pk}", "consumer-b")

        def group(event):
            row = event.kwargs["new"] or event.kwargs["old"]
            return f"tenant-{row.tenant_id}"

        ready = asyncio.Event()
        forwarding = asyncio.ensure_future(
            forward_to_groups(
                [NoteChannel],
                group=group,
                fields=["title"],
                channel_layer=layer,
                started=ready.set,
            )
        )
        await asyncio.wait_for(ready.wait(), 10)
        await sync_to_async(_changes)([a, b])
        got_a = [await asyncio.wait_for(layer.receive("consumer-a"), 10) for _ in range(2)]
        got_b = [await asyncio.wait_for(layer.receive("consumer-b"), 10) for _ in range(2)]
        forwarding.cancel()
        return got_a, got_b

    got_a, got_b = run(scenario)
    for messages, title in ((got_a, "a1"), (got_b, "b1")):
        assert [m["type"] for m in messages] == ["pgpubsub.event"] * 2
        assert all(m["event"] == NoteChannel.name() for m in messages)
        data = [json.loads(m["data"]) for m in messages]
        assert [d["op"] for d in data] == ["INSERT", "UPDATE"]
        assert data[0]["new"] == {"title": title}
        assert data[1]["old"] == {"title": title} and data[1]["new"] == {"title": "renamed"}
        assert "secret" not in messages[0]["data"]
        assert messages[0]["id"] != messages[1]["id"]


def test_a_bad_group_name_is_refused():
    async def scenario() -> None:
        await forward_to_groups(
            [NoteChannel], group="not a group!", channel_layer=layers.InMemoryChannelLayer()
        )

    with pytest.raises(StreamConfigurationError, match="not a valid channel layer group name"):
        run(scenario)
