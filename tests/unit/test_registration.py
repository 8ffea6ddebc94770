"""Registration, channel naming and argument checking (no worker involved)."""

from __future__ import annotations

import dataclasses
import hashlib

import pgtrigger
import pytest

import pgpubsub
from pgpubsub.channel import BaseChannel, locate_channel
from pgpubsub.exceptions import ChannelDefinitionError, ChannelNotFound, ListenerRegistrationError
from pgpubsub.registry import listeners_for
from pgpubsub.triggers import trigger_name
from tests.app import listeners
from tests.app.channels import AuthorChannel, Greeting, OrderChannel
from tests.app.models import Author


def test_database_channel_name_is_short_stable_and_compatible():
    name = AuthorChannel.listen_safe_name()
    assert name == "pgpubsub_" + hashlib.sha1(b"tests.app.channels.AuthorChannel").hexdigest()[:5]
    assert len(name.encode()) <= 63
    assert AuthorChannel.name() == "tests.app.channels.AuthorChannel"


def test_locate_channel_by_class_and_dotted_path():
    assert locate_channel("tests.app.channels.Greeting") is Greeting
    assert locate_channel(Greeting) is Greeting


@pytest.mark.parametrize(
    "bad",
    ["tests.app.channels.Nope", "tests.app.models.Author", "pgpubsub.Channel", BaseChannel, 42],
)
def test_locate_channel_rejects_what_is_not_a_channel(bad):
    with pytest.raises(ChannelNotFound) as info:
        locate_channel(bad)
    assert repr(bad) in str(info.value)


def test_decorators_return_the_function_unchanged():
    def callback(old, new):
        return "same"

    for decorator in (
        pgpubsub.pre_save_listener,
        pgpubsub.post_save_listener,
        pgpubsub.pre_insert_listener,
        pgpubsub.post_insert_listener,
        pgpubsub.pre_update_listener,
        pgpubsub.post_update_listener,
        pgpubsub.pre_delete_listener,
        pgpubsub.post_delete_listener,
        pgpubsub.listener,
    ):
        assert decorator(AuthorChannel)(callback) is callback


def test_one_trigger_per_channel_timing_and_operation():
    names = {trigger.name for model, trigger in pgtrigger.registered() if model is Author}
    base = AuthorChannel.listen_safe_name()
    assert {
        f"{base}_{timing}_{op}"
        for timing in ("before", "after")
        for op in ("insert", "update", "delete")
    } <= names
    assert trigger_name(AuthorChannel, "AFTER", "INSERT") == f"{base}_after_insert"


def test_listeners_subscribe_to_their_own_triggers_only():
    by_name = {lst.callback.__name__: lst for lst in listeners_for(AuthorChannel)}
    post_save = by_name["author_post_save"].triggers
    post_insert = by_name["author_post_insert"].triggers
    assert post_save is not None and post_insert is not None
    assert len(post_save) == 2 and len(post_insert) == 1
    assert post_insert < post_save
    assert by_name["author_post_insert_second"].triggers == post_insert


def test_reregistering_the_same_listener_is_idempotent():
    before = len(listeners_for(OrderChannel))
    pgpubsub.post_insert_listener(OrderChannel)(listeners.order_created)
    assert len(listeners_for(OrderChannel)) == before


def test_trigger_listeners_need_a_trigger_channel():
    with pytest.raises(ListenerRegistrationError, match="not a TriggerChannel"):
        pgpubsub.post_insert_listener(Greeting)


def test_trigger_channel_without_model_is_rejected():
    @dataclasses.dataclass
    class NoModel(pgpubsub.TriggerChannel):
        pass

    with pytest.raises(ChannelDefinitionError, match="needs `model"):
        pgpubsub.post_insert_listener(NoModel)


def test_context_parameter_is_detected():
    by_name = {lst.callback.__name__: lst for lst in listeners_for(Greeting)}
    assert by_name["greet_second"].wants_context
    assert not by_name["greet"].wants_context


def test_channel_must_be_a_dataclass():
    class Undecorated(pgpubsub.Channel):
        value: int

    with pytest.raises(ChannelDefinitionError, match="must be a dataclass"):
        Undecorated.validate()


class Opaque:
    pass


def test_unsupported_field_type_is_rejected_naming_channel_field_and_type():
    @dataclasses.dataclass
    class Bad(pgpubsub.Channel):
        thing: Opaque

    with pytest.raises(ChannelDefinitionError) as info:
        pgpubsub.listener(Bad)
    message = str(info.value)
    assert "Bad.thing" in message and "Opaque" in message
    assert info.value.field == "thing"


def test_channels_whose_database_names_collide_are_rejected(monkeypatch):
    @dataclasses.dataclass
    class Twin(pgpubsub.Channel):
        value: int

    monkeypatch.setattr(
        Twin, "listen_safe_name", classmethod(lambda cls: Greeting.listen_safe_name())
    )
    with pytest.raises(
        ChannelDefinitionError, match=r"collides with tests\.app\.channels\.Greeting"
    ):
        pgpubsub.listener(Twin)(lambda value: None)


def test_invalid_max_attempts_is_rejected_at_validation():
    @dataclasses.dataclass
    class Hasty(pgpubsub.Channel):
        value: int
        max_attempts = 0

    with pytest.raises(ChannelDefinitionError, match="max_attempts"):
        Hasty.validate()


def test_nested_channel_names_match_django_pgpubsub():
    class Outer:
        @dataclasses.dataclass
        class Inner(pgpubsub.Channel):
            value: int

    assert Outer.Inner.name() == f"{__name__}.Inner"


def test_nested_channels_of_one_name_in_one_module_collide():
    class First:
        @dataclasses.dataclass
        class Clash(pgpubsub.Channel):
            value: int

    class Second:
        @dataclasses.dataclass
        class Clash(pgpubsub.Channel):
            value: int

    pgpubsub.listener(First.Clash)(lambda value: None)
    with pytest.raises(ChannelDefinitionError, match="collides"):
        pgpubsub.listener(Second.Clash)(lambda value: None)


def test_custom_triggers_cannot_take_a_decorator_trigger_key():
    from pgpubsub.triggers import Notify

    trigger = Notify(name="after_insert", when=pgtrigger.After, operation=pgtrigger.Insert)
    with pytest.raises(ListenerRegistrationError, match="reserved"):
        pgpubsub.trigger_listener(AuthorChannel, trigger)
