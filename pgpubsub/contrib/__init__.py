"""Bridges from pgpubsub's subscriptions to other fan-out layers.

* :mod:`pgpubsub.contrib.reflex`: reflex-django's live broadcaster.
* :mod:`pgpubsub.contrib.channels`: Django Channels' channel layer groups.

Both follow channels with :func:`follow`, which keeps a subscription going
for the life of the process: it resumes after a slow-consumer cut-off from
the last event it handled (channels with ``retention``) and says loudly in
the log when events may have been missed (channels without).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence

import psycopg

from ..channel import BaseChannel
from ..exceptions import (
    CheckpointExpired,
    EventsMayBeMissed,
    SubscriberTooSlow,
    SubscriptionEnded,
)
from ..hub import Event, Subscription

logger = logging.getLogger("pgpubsub")

#: Events handed to a bridge at a time.
BATCH_SIZE = 100

#: Seconds before following again after the subscription could not start.
RESTART_DELAY = 1.0

Handler = Callable[[list[Event]], Awaitable[None] | None]


async def follow(
    channels: Sequence[type[BaseChannel] | str],
    handle: Handler,
    *,
    since: str | None = None,
    max_queue: int = 1000,
    using: str | None = None,
    started: Callable[[], None] | None = None,
) -> None:
    """Hand every event of ``channels`` to ``handle``, in batches, until cancelled.

    ``handle`` may be a function or a coroutine function; an exception it
    raises is logged and the batch is skipped (a consumer's failure is not
    the bridge's). ``started`` is called once the first subscription is in
    place: every event committed after that reaches ``handle``.
    """
    subscription = Subscription(tuple(channels), since, max_queue, using)
    located = subscription.channels
    resumable = all(channel.retained() for channel in located)
    names = ", ".join(channel.name() for channel in located)
    position = since
    while True:
        try:
            async with Subscription(tuple(located), position, max_queue, using) as subscriber:
                if started is not None:
                    started()
                    started = None
                while True:
                    batch = await subscriber.next_batch(BATCH_SIZE)
                    try:
                        result = handle(batch)
                        if inspect.isawaitable(result):
                            await result
                    except Exception:
                        logger.exception(
                            "pgpubsub: a bridge of %s failed on %d event(s)", names, len(batch)
                        )
                    if resumable:
                        position = batch[-1].id
        except SubscriberTooSlow:
            if resumable:
                logger.warning("pgpubsub: a bridge of %s fell behind; resuming", names)
            else:
                logger.error(
                    "pgpubsub: a bridge of %s fell behind and events were dropped (its channels "
                    "keep no events: set `retention` on them to resume instead)",
                    names,
                )
        except EventsMayBeMissed:
            logger.error(
                "pgpubsub: a bridge of %s lost its database connection; events sent meanwhile "
                "may have been missed (set `retention` on its channels to resume instead)",
                names,
            )
        except CheckpointExpired as exc:
            logger.error("pgpubsub: a bridge of %s cannot resume: %s", names, exc)
            position = None
        except (SubscriptionEnded, psycopg.Error) as exc:
            # The hub stopped, or could not connect at all: try again shortly.
            logger.error("pgpubsub: a bridge of %s stopped (%s); restarting", names, exc)
            await asyncio.sleep(RESTART_DELAY)


__all__ = ["follow"]
