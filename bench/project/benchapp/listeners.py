"""One ORM insert per event, the same for both libraries."""

from __future__ import annotations

import os
import time

import pgpubsub

from . import channels
from .channels import (
    BroadcastMessage,
    BroadcastRowChannel,
    DurableMessage,
    DurableRowChannel,
    TimedBroadcastChannel,
    TimedDurableChannel,
)
from .models import Processed

PID = os.getpid()


def record(kind: str, ref: int) -> None:
    Processed.objects.create(kind=kind, ref=ref, seen_at=time.time(), worker=PID)


@pgpubsub.post_insert_listener(BroadcastRowChannel)
def on_broadcast_row(old, new):
    record("broadcast_row", new.pk)


@pgpubsub.post_insert_listener(DurableRowChannel)
def on_durable_row(old, new):
    record("durable_row", new.pk)


@pgpubsub.listener(BroadcastMessage)
def on_broadcast_message(n):
    record("broadcast_msg", n)


@pgpubsub.listener(DurableMessage)
def on_durable_message(n):
    record("durable_msg", n)


@pgpubsub.post_insert_listener(TimedBroadcastChannel)
def on_timed_broadcast(old, new):
    record("timed_broadcast", new.pk)


@pgpubsub.post_insert_listener(TimedDurableChannel)
def on_timed_durable(old, new):
    record("timed_durable", new.pk)


if hasattr(channels, "RetainedRowChannel"):

    @pgpubsub.post_insert_listener(channels.RetainedRowChannel)
    def on_retained_row(old, new):
        record("retained_row", new.pk)
