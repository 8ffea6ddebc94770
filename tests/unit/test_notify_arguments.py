"""notify() argument checking: every error names the channel and the field."""

from __future__ import annotations

import pytest

import pgpubsub
from pgpubsub.exceptions import ChannelNotFound, NotifyError
from tests.app.channels import AuthorChannel, Greeting


def test_unknown_channel():
    with pytest.raises(ChannelNotFound, match=r"tests\.app\.channels\.Missing"):
        pgpubsub.notify("tests.app.channels.Missing", message="x")


def test_missing_field():
    with pytest.raises(NotifyError) as info:
        pgpubsub.notify(Greeting, count=1)
    assert info.value.field == "message"
    assert "tests.app.channels.Greeting" in str(info.value)


def test_unexpected_field():
    with pytest.raises(NotifyError) as info:
        pgpubsub.notify(Greeting, message="x", colour="red")
    assert info.value.field == "colour"
    assert "colour" in str(info.value) and "Greeting" in str(info.value)


def test_wrong_type():
    with pytest.raises(NotifyError) as info:
        pgpubsub.notify(Greeting, message="x", count="three")
    assert info.value.field == "count"
    assert "Expected `int`" in str(info.value)


def test_trigger_channels_are_not_for_notify():
    with pytest.raises(NotifyError, match="TriggerChannel"):
        pgpubsub.notify(AuthorChannel, old=None, new=None)


def test_an_instance_instead_of_the_class_says_to_pass_the_class_and_the_fields():
    with pytest.raises(NotifyError) as info:
        pgpubsub.notify(Greeting(message="hi", count=2))
    assert str(info.value) == (
        "notify() was given an instance of tests.app.channels.Greeting; pass the channel class "
        "and the fields as keywords: notify(Greeting, message='hi', count=2)"
    )


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("tests.app.chanels.Greeting", "no module named 'tests.app.chanels'"),
        ("nope.channels.Greeting", "no module named 'nope'"),
        ("tests.app.channels.Greting", "'tests.app.channels' has no attribute 'Greting'"),
        ("Greeting", "give the dotted path of the class, e.g. 'myapp.channels.Greeting'"),
    ],
)
def test_a_wrong_dotted_path_says_which_part_is_missing(path, reason):
    with pytest.raises(ChannelNotFound) as info:
        pgpubsub.notify(path, message="x")
    assert str(info.value) == f"Channel not found: {path!r} ({reason})"


def test_an_instance_given_to_a_decorator_says_to_pass_the_class():
    with pytest.raises(ChannelNotFound, match=r"an instance of Greeting; pass the channel class"):
        pgpubsub.listener(Greeting(message="hi"))
