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
