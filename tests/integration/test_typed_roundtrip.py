"""Typed channel payloads round-trip exactly, through PostgreSQL's jsonb as in production."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import math
import uuid
from decimal import Decimal

import pytest
from django.db import connection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pgpubsub
from pgpubsub.codec import is_placeholder
from pgpubsub.exceptions import ChannelDefinitionError, NotifyError
from tests.app.models import Author

pytestmark = pytest.mark.django_db


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Size(enum.IntEnum):
    SMALL = 1
    LARGE = 2


@dataclasses.dataclass
class Point:
    x: float
    y: float
    label: str | None = None


@dataclasses.dataclass
class Everything(pgpubsub.Channel):
    text: str
    number: int
    ratio: float
    flag: bool
    nothing: None
    price: Decimal
    when: datetime.datetime
    day: datetime.date
    at: datetime.time
    duration: datetime.timedelta
    uid: uuid.UUID
    colour: Colour
    size: Size
    maybe: int | None
    either: int | str
    items: list[int]
    var_tuple: tuple[str, ...]
    fixed_tuple: tuple[int, str, bool]
    tags: set[str]
    frozen: frozenset[int]
    mapping: dict[int, datetime.date]
    nested: dict[str, list[Point]]
    point: Point
    optional_point: Point | None = None


texts = st.text(st.characters(exclude_characters="\x00", codec="utf-8"))
finite = st.floats(allow_nan=False, allow_infinity=False)
# Aware datetimes arrive with a fixed UTC offset, to the minute (ISO 8601).
minute_offsets = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda minutes: datetime.timezone(datetime.timedelta(minutes=minutes))
)
timezones = st.none() | st.just(datetime.timezone.utc) | minute_offsets
points = st.builds(Point, x=finite, y=finite, label=st.none() | texts)

everything = st.builds(
    Everything,
    text=texts,
    number=st.integers(),
    ratio=finite,
    flag=st.booleans(),
    nothing=st.none(),
    price=st.decimals(allow_nan=False, allow_infinity=False),
    when=st.datetimes(timezones=timezones),
    day=st.dates(),
    at=st.times(),
    duration=st.timedeltas(
        min_value=datetime.timedelta(days=-(10**6)), max_value=datetime.timedelta(days=10**6)
    ),
    uid=st.uuids(),
    colour=st.sampled_from(Colour),
    size=st.sampled_from(Size),
    maybe=st.none() | st.integers(),
    either=st.integers() | texts,
    items=st.lists(st.integers()),
    var_tuple=st.lists(texts).map(tuple),
    fixed_tuple=st.tuples(st.integers(), texts, st.booleans()),
    tags=st.sets(texts),
    frozen=st.frozensets(st.integers()),
    mapping=st.dictionaries(st.integers(), st.dates()),
    nested=st.dictionaries(texts, st.lists(points, max_size=3), max_size=3),
    point=points,
    optional_point=st.none() | points,
)


def through_postgres(encoded: bytes) -> bytes:
    """What the worker receives: the payload after the jsonb round trip in pgpubsub_publish_v1."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT (%s::jsonb)::text", [encoded.decode()])
        return cursor.fetchone()[0].encode()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=everything)
def test_every_supported_type_round_trips_exactly(value):
    codec = Everything.codec()
    kwargs = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    encoded = codec.encode_kwargs(kwargs)
    decoded = codec.decode_kwargs(through_postgres(encoded))
    assert decoded == kwargs
    for name, original in kwargs.items():
        assert type(decoded[name]) is type(original), name
        if isinstance(original, datetime.datetime):
            assert (decoded[name].tzinfo is None) == (original.tzinfo is None)
            assert decoded[name].utcoffset() == original.utcoffset()


@dataclasses.dataclass
class WithModel(pgpubsub.Channel):
    author: Author
    co_author: Author | None = None


def test_model_instances_travel_by_primary_key():
    author = Author.objects.create(name="ada")
    codec = WithModel.codec()
    encoded = codec.encode_kwargs({"author": author})
    assert encoded.startswith(f'{{"author":{author.pk}'.encode())
    decoded = codec.decode_kwargs(through_postgres(encoded))
    assert decoded["author"] == author and isinstance(decoded["author"], Author)
    assert decoded["co_author"] is None


@dataclasses.dataclass(frozen=True)
class Byline:
    author: Author
    role: str


@dataclasses.dataclass
class ManyModels(pgpubsub.Channel):
    authors: list[Author]
    bylines: tuple[Byline, ...]
    by_name: dict[str, Author]
    title: str


def test_decoding_reads_no_database_and_loading_models_is_its_own_step(
    django_assert_num_queries,
):
    ada, bob = Author.objects.create(name="ada"), Author.objects.create(name="bob")
    codec = ManyModels.codec()
    raw = through_postgres(
        codec.encode_kwargs(
            {
                "authors": [ada, bob],
                "bylines": (Byline(bob, "editor"),),
                "by_name": {"ada": ada},
                "title": "t",
            }
        )
    )
    with django_assert_num_queries(0):
        decoded = codec.decode(raw)
        placeholders = [*decoded["authors"], decoded["bylines"][0].author]
        placeholders.append(decoded["by_name"]["ada"])
        assert all(is_placeholder(found) for found in placeholders)
        assert [found.pk for found in placeholders] == [ada.pk, bob.pk, bob.pk, ada.pk]
    with django_assert_num_queries(4):
        loaded = codec.resolve(decoded)
    everything = [*loaded["authors"], loaded["bylines"][0].author, loaded["by_name"]["ada"]]
    assert not any(is_placeholder(found) for found in everything)
    assert [found.name for found in everything] == ["ada", "bob", "bob", "ada"]
    assert loaded["bylines"] == (Byline(bob, "editor"),)
    assert loaded["title"] == "t"


@dataclasses.dataclass
class Signed(pgpubsub.Channel):
    author: Author

    def __post_init__(self) -> None:
        # Runs while decoding, before the models are loaded: the field is a
        # placeholder whose other fields load on access.
        if not self.author.name:
            raise ValueError("a signed message needs an author with a name")


def test_a_post_init_reading_a_model_field_still_works():
    author = Author.objects.create(name="ada")
    codec = Signed.codec()
    decoded = codec.decode_kwargs(through_postgres(codec.encode_kwargs({"author": author})))
    assert decoded == {"author": author} and not is_placeholder(decoded["author"])
    Author.objects.filter(pk=author.pk).update(name="")
    with pytest.raises(ValueError, match="needs an author with a name"):
        codec.decode(through_postgres(codec.encode_kwargs({"author": author})))


def test_only_channels_with_model_fields_have_models_to_load(django_assert_num_queries):
    assert ManyModels.codec().has_models and WithModel.codec().has_models
    codec = Everything.codec()
    assert not codec.has_models
    decoded = codec.decode(through_postgres(codec.encode_kwargs(sample_kwargs())))
    with django_assert_num_queries(0):
        assert codec.resolve(decoded) is decoded


def test_model_field_rejects_a_bare_primary_key():
    with pytest.raises(NotifyError) as info:
        WithModel.codec().encode_kwargs({"author": 1})
    assert info.value.field == "author"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_rejected(bad):
    with pytest.raises(NotifyError) as info:
        Everything.codec().encode_kwargs({**sample_kwargs(), "point": Point(1.0, bad)})
    assert info.value.field == "point"
    assert "point.y" in str(info.value)


def test_nul_characters_are_rejected():
    with pytest.raises(NotifyError, match="NUL") as info:
        Everything.codec().encode_kwargs({**sample_kwargs(), "text": "a\x00b"})
    assert info.value.field == "text"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("number", "1"),
        ("price", 1.5),
        ("when", "2024-01-01"),
        ("items", [1, "2"]),
        ("colour", "blue"),
        ("mapping", {"k": datetime.date.today()}),
    ],
)
def test_wrong_types_name_the_field(field, value):
    with pytest.raises(NotifyError) as info:
        Everything.codec().encode_kwargs({**sample_kwargs(), field: value})
    assert info.value.field == field


def sample_kwargs() -> dict[str, object]:
    return {
        "text": "t",
        "number": 1,
        "ratio": 1.0,
        "flag": True,
        "nothing": None,
        "price": Decimal("1.5"),
        "when": datetime.datetime(2024, 1, 1),
        "day": datetime.date(2024, 1, 1),
        "at": datetime.time(1, 2),
        "duration": datetime.timedelta(seconds=1),
        "uid": uuid.uuid4(),
        "colour": Colour.RED,
        "size": Size.SMALL,
        "maybe": None,
        "either": 1,
        "items": [],
        "var_tuple": (),
        "fixed_tuple": (1, "a", False),
        "tags": set(),
        "frozen": frozenset(),
        "mapping": {},
        "nested": {},
        "point": Point(0.0, 0.0),
    }


def test_uncarriable_types_are_rejected_at_definition():
    @dataclasses.dataclass
    class Bad(pgpubsub.Channel):
        handle: object.__class__  # a metaclass: not data

    with pytest.raises(ChannelDefinitionError) as info:
        Bad.validate()
    assert info.value.field == "handle"
