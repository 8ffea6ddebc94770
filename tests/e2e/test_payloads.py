"""End to end: every payload arrives intact and typed, whatever its size or shape."""

from __future__ import annotations

import datetime
import hashlib
import json
import random
import uuid
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.db.backends.postgresql.psycopg_any import DateTimeTZRange, NumericRange

import pgpubsub
from pgpubsub.models import Notification, StoredPayload
from tests.app.channels import DurableGreeting, Greeting, OrderChannel, Sized
from tests.app.models import Author, Delivery, Everything, Order, Post, Profile, Restaurant
from tests.conftest import sentinel, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SIZES = {"small": 100, "just-over": 8_000, "200KB": 200_000, "5MB": 5_000_000}


def digest(text: str) -> dict[str, object]:
    return {"length": len(text), "sha256": hashlib.sha256(text.encode()).hexdigest()}


def wait_deliveries(count: int, listener: str, timeout: float = 30.0) -> None:
    wait_for(
        lambda: Delivery.objects.filter(listener=listener).count() >= count,
        timeout,
        what=f"{count} deliveries to {listener}",
    )


def test_notify_payloads_of_every_size_arrive_intact(start_worker):
    start_worker()
    bodies = {label: "".join(random.choices("ab'\"$%\\✓", k=size)) for label, size in SIZES.items()}
    for label, body in bodies.items():
        pgpubsub.notify(Sized, label=label, body=body)
    wait_deliveries(len(bodies), "sized")
    got = {d.key: d.data for d in Delivery.objects.filter(listener="sized")}
    assert got == {label: digest(body) for label, body in bodies.items()}


def test_trigger_rows_of_every_size_arrive_intact(start_worker):
    start_worker()
    posts = {}
    for label, size in SIZES.items():
        post = Post.objects.create(title=label, content="x" * size)
        posts[str(post.pk)] = digest(post.content)
    # A bulk write whose statement-level batch is far over the NOTIFY limit.
    Post.objects.bulk_create([Post(title=f"bulk{i}", content="y" * 3000) for i in range(100)])
    for post in Post.objects.filter(title__startswith="bulk"):
        posts[str(post.pk)] = digest(post.content)
    wait_deliveries(len(posts), "post_inserted")
    got = {d.key: d.data for d in Delivery.objects.filter(listener="post_inserted")}
    assert got == posts


def test_durable_payloads_of_any_size(start_worker):
    start_worker()
    big = "q" * 1_000_000
    pgpubsub.notify(DurableGreeting, message=big)
    wait_deliveries(1, "durable_greet")
    assert Delivery.objects.get(listener="durable_greet").key == big


def test_identical_updates_in_one_transaction_are_two_deliveries(start_worker):
    start_worker()
    author = Author.objects.create(name="twice")
    with transaction.atomic():
        Author.objects.filter(pk=author.pk).update(name="same")
        Author.objects.filter(pk=author.pk).update(name="same")
    wait_deliveries(2, "post_update")
    sentinel()
    assert Delivery.objects.filter(listener="post_update").count() == 2


def everything(**overrides) -> Everything:
    author = Author.objects.create(name="writer")
    values = {
        "id": uuid.uuid4(),
        "text": "text with 'quotes' and \\ and $$",
        "number": -42,
        "big": 2**62,
        "flag": True,
        "ratio": 0.1,
        "price": Decimal("12345678901234567890.12345678901234567890"),
        "when": datetime.datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=datetime.timezone.utc),
        "day": datetime.date(2024, 2, 29),
        "at": datetime.time(13, 14, 15, 161718),
        "duration": datetime.timedelta(days=3, hours=4, microseconds=5),
        "uid": uuid.uuid4(),
        "data": {"nested": [1, 2.5, "three", None, {"x": True}], "pi": 3.14159},
        "blob": b"\x00\x01binary\xff",
        "tags": ["a", "b,c", 'd"e'],
        "amounts": [Decimal("1.1000"), Decimal("2.0001")],
        "attrs": {"colour": "red", "size": None},
        "span": NumericRange(1, 10),
        "period": DateTimeTZRange(
            datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
            datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone.utc),
        ),
        "author": author,
    }
    values.update(overrides)
    return Everything.objects.create(**values)


@pytest.mark.parametrize("use_tz", ["1", "0"])
def test_every_field_kind_is_rebuilt_exactly(start_worker, use_tz):
    start_worker(extra_env={"PGPUBSUB_TEST_USE_TZ": use_tz})
    full = everything()
    empty = Everything.objects.create(id=uuid.uuid4())
    wait_deliveries(2, "everything")
    for delivery in Delivery.objects.filter(listener="everything"):
        assert delivery.data == {}, f"fields differ for {delivery.key}: {delivery.data}"
    assert {d.key for d in Delivery.objects.filter(listener="everything")} == {
        str(full.pk),
        str(empty.pk),
    }


def test_one_to_one_primary_key_and_inheritance_children(start_worker):
    start_worker()
    author = Author.objects.create(name="owner")
    Profile.objects.create(author=author, website="https://example.com")
    Restaurant.objects.create(name="Luigi's", serves_pizza=True)
    wait_deliveries(1, "profile")
    wait_deliveries(1, "restaurant")
    for delivery in Delivery.objects.filter(listener__in=["profile", "restaurant"]):
        assert delivery.data == {}, delivery.data


def test_rows_from_before_a_schema_change_still_deliver(start_worker):
    worker = start_worker()
    # Simulate a payload written by an older schema: an unknown column and a
    # missing one.
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO pgpubsub_notification (channel, payload) VALUES (%s, %s::jsonb)",
            [
                OrderChannel.listen_safe_name(),
                '{"app": "app", "model": "Order", "op": "INSERT", '
                '"new": {"id": 999, "reference": "old-schema", "dropped": 1}}',
            ],
        )
        cursor.execute("SELECT pg_notify(%s, '')", [OrderChannel.listen_safe_name()])
    wait_deliveries(1, "order_created")
    assert Delivery.objects.get(listener="order_created").key == "old-schema"
    worker.wait_for_output("lack columns amount")


def test_context_reaches_listeners_that_ask_for_it(start_worker):
    start_worker()
    with transaction.atomic():
        pgpubsub.set_notification_context({"user": "alice"})
        pgpubsub.notify(Greeting, message="with-context")
    pgpubsub.notify(Greeting, message="without-context")
    wait_deliveries(2, "greet_second")
    contexts = {d.key: d.data["context"] for d in Delivery.objects.filter(listener="greet_second")}
    assert contexts == {"with-context": {"user": "alice"}, "without-context": {}}


def test_malformed_payloads_are_skipped_and_the_worker_keeps_serving(start_worker):
    worker = start_worker()
    rng = random.Random(1234)
    valid = '{"seq": 1, "events": [{"kwargs": {"message": "x", "count": 1}}]}'
    garbage = [
        "",
        "not json",
        "{",
        "[]",
        "null",
        '{"events": 5}',
        '{"events": [{"kwargs": {"message": 5}}]}',
        '{"events": [{"kwargs": {"unknown": 1}}]}',
        '{"ref": 987654321}',
        '{"ref": "x"}',
        "\\x00\\x01",
    ]
    garbage += [valid[: rng.randrange(1, len(valid))] for _ in range(20)]
    garbage += ["".join(rng.choices('{}[]":,01abn\\ ', k=rng.randrange(1, 60))) for _ in range(30)]
    with connection.cursor() as cursor:
        for payload in garbage:
            cursor.execute("SELECT pg_notify(%s, %s)", [Greeting.listen_safe_name(), payload])
        for payload in ["{}", '{"kwargs": 1}', '{"old": 5}']:
            cursor.execute(
                "INSERT INTO pgpubsub_notification (channel, payload) VALUES (%s, %s::jsonb)",
                [DurableGreeting.listen_safe_name(), payload],
            )
        cursor.execute("SELECT pg_notify(%s, '')", [DurableGreeting.listen_safe_name()])
    pgpubsub.notify(Greeting, message="still-alive")
    pgpubsub.notify(DurableGreeting, message="durable-still-alive")
    wait_deliveries(1, "greet")
    wait_deliveries(1, "durable_greet")
    assert worker.proc.poll() is None
    worker.wait_for_output("skipped a malformed notification")
    # Durable garbage is never lost silently: it ends as dead letters.
    wait_for(
        lambda: Notification.objects.filter(state="dead").count() == 3,
        what="malformed stored notifications to be dead-lettered",
    )


def test_expired_stored_payloads_are_cleaned_up(start_worker):
    # The SQL of version 1 stored a broadcast payload over the NOTIFY limit in
    # pgpubsub_payload and sent its reference: triggers not yet regenerated
    # still do, and workers still read those payloads and clean them up.
    start_worker()
    old = StoredPayload.objects.create(channel="x", payload="{}")
    StoredPayload.objects.filter(pk=old.pk).update(
        created_at=datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc)
    )
    message = json.dumps({"events": [{"kwargs": {"label": "big", "body": "b" * 10_000}}]})
    stored = StoredPayload.objects.create(channel=Sized.listen_safe_name(), payload=message)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_notify(%s, %s)", [Sized.listen_safe_name(), json.dumps({"ref": stored.pk})]
        )
    wait_deliveries(1, "sized")
    wait_for(lambda: not StoredPayload.objects.filter(pk=old.pk).exists(), what="cleanup")
    assert Order.objects.count() == 0
