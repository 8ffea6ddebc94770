"""Listeners of the test app: each records what it received as a Delivery row."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import pgtrigger
from django.db import connection

import pgpubsub
from pgpubsub.triggers import Notify

from .channels import (
    AsyncJob,
    AuthorChannel,
    DurableGreeting,
    EverythingChannel,
    Greeting,
    LoudGreeting,
    OrderChannel,
    PostChannel,
    ProfileChannel,
    RestaurantChannel,
    RetryProbe,
    Sized,
    TicketChannel,
    UrgentGreeting,
)
from .models import Delivery


def record(listener: str, old: Any = None, new: Any = None, **data: Any) -> None:
    row = new if new is not None else old
    Delivery.objects.create(
        listener=listener,
        key=str(row.pk) if row is not None else str(data.get("message", "")),
        data={
            "old": getattr(old, "name", None) if old is not None else None,
            "new": getattr(new, "name", None) if new is not None else None,
            **{k: v for k, v in data.items() if isinstance(v, str | int | float | bool | dict)},
        },
    )


@pgpubsub.pre_save_listener(AuthorChannel)
def author_pre_save(old, new):
    record("pre_save", old, new)


@pgpubsub.post_save_listener(AuthorChannel)
def author_post_save(old, new):
    record("post_save", old, new)


@pgpubsub.pre_insert_listener(AuthorChannel)
def author_pre_insert(old, new):
    record("pre_insert", old, new)


@pgpubsub.post_insert_listener(AuthorChannel)
def author_post_insert(old, new):
    record("post_insert", old, new)


@pgpubsub.pre_update_listener(AuthorChannel)
def author_pre_update(old, new):
    record("pre_update", old, new)


@pgpubsub.post_update_listener(AuthorChannel)
def author_post_update(old, new):
    record("post_update", old, new)


@pgpubsub.pre_delete_listener(AuthorChannel)
def author_pre_delete(old, new):
    record("pre_delete", old, new)


@pgpubsub.post_delete_listener(AuthorChannel)
def author_post_delete(old, new):
    record("post_delete", old, new)


@pgpubsub.post_insert_listener("tests.app.channels.AuthorChannel")
def author_post_insert_second(old, new):
    """A second listener on the same channel and operation, given by dotted path."""
    record("post_insert_second", old, new)


@pgpubsub.trigger_listener(
    PostChannel,
    Notify(
        name="highly_rated_post",
        when=pgtrigger.After,
        operation=pgtrigger.Insert | pgtrigger.Update,
        condition=pgtrigger.Q(new__rating__gte=4),
    ),
)
def highly_rated_post(old, new):
    Delivery.objects.create(
        listener="highly_rated",
        key=str(new.pk),
        data={"title": new.title, "rating": str(new.rating), "author_id": new.author_id},
    )


_failed_once: set[str] = set()


@pgpubsub.post_insert_listener(OrderChannel)
def order_created(old, new, context):
    if new.reference.startswith("fail-once") and new.reference not in _failed_once:
        # Remembered in the process: the rollback removes any database trace.
        _failed_once.add(new.reference)
        raise RuntimeError(f"first attempt at {new.reference} fails")
    if new.reference.startswith("timeout"):
        # A statement timeout is an OperationalError, yet the connection is fine:
        # it must count as this notification's failure, not a lost connection.
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = 1")
            cursor.execute("SELECT pg_sleep(1)")
    if new.reference.startswith("broken") and os.environ.get("PGPUBSUB_TEST_BROKEN_LISTENER"):
        raise RuntimeError(f"{new.reference}: the listener is broken in this deployment")
    Delivery.objects.create(listener="order_created", key=new.reference, data={"context": context})


@pgpubsub.listener(Greeting)
def greet(message: str, count: int):
    if message == "boom":
        raise ValueError("the greeting listener refuses 'boom'")
    Delivery.objects.create(listener="greet", key=message, data={"count": count})


@pgpubsub.listener(Greeting)
def greet_second(message: str, count: int, context):
    Delivery.objects.create(
        listener="greet_second", key=message, data={"count": count, "context": context}
    )


@pgpubsub.listener(DurableGreeting)
def durable_greet(message: str):
    Delivery.objects.create(listener="durable_greet", key=message)


def compare_with_database(listener: str, instance: Any) -> None:
    """Record which fields of a delivered instance differ from the stored row."""
    model = type(instance)
    stored = model._default_manager.get(pk=instance.pk)
    mismatches = {}
    for field in model._meta.concrete_fields:
        got = getattr(instance, field.attname)
        want = getattr(stored, field.attname)
        if isinstance(want, memoryview):
            want = bytes(want)
        if isinstance(got, memoryview):
            got = bytes(got)
        if got != want or type(got) is not type(want):
            mismatches[field.attname] = f"{got!r} != {want!r}"
    Delivery.objects.create(listener=listener, key=str(instance.pk), data=mismatches)


@pgpubsub.post_save_listener(EverythingChannel)
def everything_saved(old, new):
    compare_with_database("everything", new)


@pgpubsub.post_save_listener(ProfileChannel)
def profile_saved(old, new):
    compare_with_database("profile", new)


@pgpubsub.post_save_listener(RestaurantChannel)
def restaurant_saved(old, new):
    compare_with_database("restaurant", new)


@pgpubsub.listener(Sized)
def sized(label: str, body: str):
    Delivery.objects.create(
        listener="sized",
        key=label,
        data={"length": len(body), "sha256": hashlib.sha256(body.encode()).hexdigest()},
    )


@pgpubsub.post_insert_listener(PostChannel)
def post_inserted(old, new):
    Delivery.objects.create(
        listener="post_inserted",
        key=str(new.pk),
        data={
            "length": len(new.content),
            "sha256": hashlib.sha256(new.content.encode()).hexdigest(),
        },
    )


@pgpubsub.post_insert_listener(TicketChannel)
def ticket_created(old, new):
    if new.code.startswith("bad"):
        raise ValueError(f"ticket {new.code} is bad")
    if new.code.startswith("swallow"):
        # Catching a database error without a savepoint of one's own leaves
        # the transaction aborted: the worker must count it as a failure,
        # not commit (which PostgreSQL would silently turn into a rollback).
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1 / 0")
        except Exception:
            pass
    Delivery.objects.create(listener="ticket_created", key=new.code)


# Durable update and delete triggers, and a durable BEFORE trigger (row-level,
# through pgpubsub_publish_v1()), for the shape of stored events.
@pgpubsub.pre_update_listener(TicketChannel)
def ticket_pre_update(old, new):
    record("ticket_pre_update", old, new, key=new.code)


@pgpubsub.post_update_listener(TicketChannel)
def ticket_updated(old, new):
    record("ticket_updated", old, new, key=new.code)


@pgpubsub.post_delete_listener(TicketChannel)
def ticket_deleted(old, new):
    record("ticket_deleted", old, new, key=old.code)


@pgpubsub.listener(LoudGreeting)
def loud_greet(message: str, count: int, volume: int):
    record("loud_greet", message=message)


@pgpubsub.listener(UrgentGreeting)
def urgent_greet(message: str):
    record("urgent_greet", message=message)


@pgpubsub.listener(AuthorChannel)
def author_any_event(**kwargs):
    """Receives every event of the channel; takes **kwargs, so it gets ``context``
    when PGPUBSUB_PASS_CONTEXT_TO_LISTENERS is on."""
    if kwargs.get("context"):
        Delivery.objects.create(listener="author_any_event", key="ctx", data=kwargs["context"])


def probe(event: str) -> None:
    """Append ``event`` and the time to ``$PGPUBSUB_TEST_PROBE_FILE``.

    A file, not a table: the calls of a failing notification are rolled back.
    """
    path = os.environ.get("PGPUBSUB_TEST_PROBE_FILE")
    if path:
        with open(path, "a", encoding="utf-8") as probe_file:
            probe_file.write(f"{event} {time.time():.6f}\n")


@pgpubsub.listener(RetryProbe)
def probe_healthy(label: str):
    probe(f"healthy {label}")


@pgpubsub.listener(RetryProbe)
def probe_failing(label: str):
    probe(f"failing {label}")
    raise RuntimeError(f"the probe {label} always fails")


if os.environ.get("PGPUBSUB_TEST_UNMIGRATED_LISTENER") == "1":
    # A listener added without makemigrations: its trigger is in no migration.

    @pgpubsub.post_delete_listener(OrderChannel)
    def order_deleted(old, new):
        Delivery.objects.create(listener="order_deleted", key=old.reference)


if os.environ.get("PGPUBSUB_TEST_BAD_SIGNATURE") == "1":
    # A listener that cannot take old (system check tests).

    @pgpubsub.post_insert_listener(AuthorChannel)
    def bad_signature(new):
        record("bad", None, new)


# Attempts per message, in the worker process (not in the database, which a
# failed attempt rolls back).
_async_attempts: dict[str, int] = {}


@pgpubsub.listener(AsyncJob)
async def async_job(message: str):
    """Writes through the async ORM, then fails its first attempt of a "fail-once" message.

    Each call is also noted in the file named by PGPUBSUB_TEST_ASYNC_LOG, outside
    the database, where no rollback takes it back.
    """
    await Delivery.objects.acreate(listener="async_job", key=message)
    _async_attempts[message] = _async_attempts.get(message, 0) + 1
    log = os.environ.get("PGPUBSUB_TEST_ASYNC_LOG")
    if log:
        with open(log, "a") as calls:
            calls.write(message + "\n")
    if message.startswith("fail-once") and _async_attempts[message] == 1:
        raise RuntimeError(f"{message}: the first attempt fails after writing")
