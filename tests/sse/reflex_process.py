"""A process whose reflex-django broadcaster is fed by pgpubsub.contrib.reflex.

Run by tests/sse/test_reflex_bridge.py. It subscribes a queue to the
broadcaster for ``app.author`` (as a live list does), starts the bridge,
prints ``ready``, then prints each ModelChange it receives as a JSON line.
The line ``update`` on stdin makes it run a QuerySet.update() on authors.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import django

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.project.settings")
django.setup()

from asgiref.sync import sync_to_async  # noqa: E402
from django.db.models import F  # noqa: E402
from reflex_django.live import live_broadcaster  # noqa: E402

from pgpubsub.contrib.reflex import start_in_thread  # noqa: E402
from tests.app.channels import RetainedAuthorChannel  # noqa: E402
from tests.app.models import Author  # noqa: E402


def update() -> int:
    return Author.objects.filter(name__startswith="reflex-").update(age=F("age") + 1)


async def commands() -> None:
    while line := await asyncio.to_thread(sys.stdin.readline):
        if line.strip() == "update":
            count = await sync_to_async(update)()
            print(json.dumps({"updated": count}), flush=True)


async def main() -> None:
    queue = live_broadcaster().subscribe("app.author")
    forwarder = start_in_thread([RetainedAuthorChannel])
    if not await asyncio.to_thread(forwarder.ready.wait, 30):
        raise SystemExit("the bridge did not start")
    print("ready", flush=True)
    reading = asyncio.ensure_future(commands())
    try:
        while True:
            change = await queue.get()
            print(
                json.dumps({"model": change.model_label, "action": change.action, "pk": change.pk}),
                flush=True,
            )
    finally:
        reading.cancel()
        forwarder.stop()


if __name__ == "__main__":
    asyncio.run(main())
