"""How channel classes are declared: ``model`` annotations and misplaced setting annotations."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import pytest

from pgpubsub import Channel, ChannelDefinitionError, TriggerChannel
from tests.app.models import Author


def test_a_model_annotation_names_the_model():
    # Under postponed annotations (this module), the annotation is the text "Author".
    @dataclasses.dataclass
    class AnnotatedChannel(TriggerChannel):
        model: Author

    assert AnnotatedChannel.get_model() is Author
    assert [field.name for field in dataclasses.fields(AnnotatedChannel)] == [
        "old",
        "new",
        "context",
    ]
    AnnotatedChannel.validate()


def test_a_model_annotation_evaluated_at_class_creation_names_the_model():
    channel = dataclasses.make_dataclass(
        "EvaluatedAnnotationChannel", [("model", Author)], bases=(TriggerChannel,)
    )
    assert channel.get_model() is Author
    assert [field.name for field in dataclasses.fields(channel)] == ["old", "new", "context"]


def test_a_model_annotation_with_a_value_keeps_the_value():
    @dataclasses.dataclass
    class LabelledChannel(TriggerChannel):
        model: str = "app.Author"

    assert LabelledChannel.get_model() is Author


def test_an_annotated_lock_notifications_is_rejected_with_the_line_to_write():
    with pytest.raises(ChannelDefinitionError) as info:

        @dataclasses.dataclass
        class AnnotatedSetting(TriggerChannel):
            model = Author
            lock_notifications: bool = True

    assert info.value.field == "lock_notifications"
    assert "AnnotatedSetting.lock_notifications" in str(info.value)
    assert "`lock_notifications = True` without a type annotation" in str(info.value)


def test_an_annotated_max_attempts_after_a_field_is_rejected():
    with pytest.raises(ChannelDefinitionError, match="`max_attempts = 5` without a type"):

        @dataclasses.dataclass
        class AnnotatedAttempts(Channel):
            message: str
            max_attempts: int = 5


def test_a_classvar_setting_is_accepted():
    @dataclasses.dataclass
    class ClassVarSetting(Channel):
        message: str
        lock_notifications: ClassVar[bool] = True

    assert ClassVarSetting.lock_notifications is True
    assert [field.name for field in dataclasses.fields(ClassVarSetting)] == ["message"]
