"""django-pgpubsub 1.3.1 internals that users' test suites call: serialize() and deserialize().

These tests run without database access (pytest-django refuses it), which
is part of what they check: 1.3.1's deserialize() never read the database.
"""

# Channels declared with typing's Dict/List/Tuple, as 1.3.1's users declare them.
# ruff: noqa: UP006, UP035, UP045

from __future__ import annotations

import dataclasses
import datetime
import decimal
import json
from typing import Dict, List, Optional, Set, Tuple

import pytest
from django.test import override_settings

from pgpubsub import Channel, NotifyError, PayloadError
from tests.app.channels import AuthorChannel, PostChannel
from tests.app.models import Author, Post


@dataclasses.dataclass
class Compat(Channel):
    when: datetime.date
    by_day: Dict[datetime.date, bool]
    words: Tuple[str]
    ratios: Set[float]
    nested: Optional[List[Tuple[int]]] = None
    price: decimal.Decimal = decimal.Decimal("0")


def test_serialize_then_deserialize_round_trips_the_fields():
    fields = {
        "when": datetime.date(2021, 1, 1),
        "by_day": {datetime.date(2021, 1, 7): True},
        "words": ("hello", "world"),
        "ratios": {1.0, 2.1},
        "nested": [(1, 2, 3)],
        "price": decimal.Decimal("1.10"),
    }
    serialized = Compat(**fields).serialize()
    assert json.loads(serialized)["kwargs"]["words"] == ["hello", "world"]
    assert Compat.deserialize(serialized) == fields
    assert Compat.deserialize(json.loads(serialized)) == fields


def test_a_one_element_tuple_annotation_carries_tuples_of_any_length():
    # 1.3.1 read Tuple[X] as a tuple of X of any length; typing reads one X.
    codec = Compat.codec()
    encoded = codec.encode_kwargs(
        {
            "when": datetime.date(2021, 1, 1),
            "by_day": {},
            "words": ("a", "b", "c"),
            "ratios": set(),
            "nested": [(), (1,)],
        }
    )
    assert codec.decode_kwargs(encoded)["nested"] == [(), (1,)]
    with pytest.raises(NotifyError) as info:
        codec.encode_kwargs(
            {"when": datetime.date(2021, 1, 1), "by_day": {}, "words": (1,), "ratios": set()}
        )
    assert info.value.field == "words"
    # The channel class keeps its annotations; only the codec reads them so.
    assert codec.cls is not Compat
    assert dataclasses.fields(Compat)[2].type == "Tuple[str]"


def test_a_channel_without_one_element_tuples_is_read_as_declared():
    @dataclasses.dataclass
    class Plain(Channel):
        pair: Tuple[int, str]
        many: Tuple[int, ...] = ()

    assert Plain.codec().cls is Plain


def test_serialize_checks_the_field_types_as_notify_does():
    with pytest.raises(NotifyError):
        Compat(when="not a date", by_day={}, words=(), ratios=set()).serialize()


def test_deserialize_rebuilds_old_and_new_from_a_1_3_1_payload_without_the_database():
    payload = json.dumps(
        {
            "app": "app",
            "model": "Post",
            "old": None,
            "new": {
                "id": 7,
                "post_title": "hello",
                "rating": "1.5",
                "content": "text",
                "dropped_column": 1,
            },
            "context": {"user": "alice"},
        }
    )
    deserialized = PostChannel.deserialize(payload)
    assert set(deserialized) == {"old", "new"}
    assert deserialized["old"] is None
    post = deserialized["new"]
    assert isinstance(post, Post)
    assert (post.pk, post.title, post.rating) == (7, "hello", decimal.Decimal("1.5"))
    # author_id is missing from the row: its default, as 1.3.1 gave, not a query.
    assert post.author_id is None and post.author is None


def test_deserialize_takes_a_stored_payload_and_passes_context_when_asked():
    payload = {
        "app": "app",
        "model": "Author",
        "trigger": "after_update",
        "op": "UPDATE",
        "old": {"id": 3, "name": "before", "age": None, "bio": ""},
        "new": {"id": 3, "name": "after", "age": 40, "bio": ""},
        "context": {"user": "alice"},
    }
    with override_settings(PGPUBSUB_PASS_CONTEXT_TO_LISTENERS=True):
        deserialized = AuthorChannel.deserialize(payload)
    assert (deserialized["old"].name, deserialized["new"].age) == ("before", 40)
    assert isinstance(deserialized["new"], Author)
    assert deserialized["context"] == {"user": "alice"}


def test_deserialize_refuses_a_payload_of_another_model():
    with pytest.raises(PayloadError, match=r"is for the model app\.Order"):
        AuthorChannel.deserialize({"app": "app", "model": "Order", "old": None, "new": None})
