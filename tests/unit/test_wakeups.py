"""The reader's side of the wake-up protocol, without a database (pgpubsub.wakeups)."""

from __future__ import annotations

import pytest

from pgpubsub.exceptions import InvalidCheckpoint
from pgpubsub.positions import LAST, Position, database_tag
from pgpubsub.wakeups import BusyPoll, Sleep, wake_key


def test_generated_channel_names_map_one_to_one_below_custom_names():
    assert wake_key("pgpubsub_00000") == 0
    assert wake_key("pgpubsub_fffff") == 2**20 - 1
    custom = wake_key("my_custom_trigger")
    assert 2**30 <= custom < 2**31
    assert wake_key("my_custom_trigger") == custom


def test_answers_are_recorded_and_busy_channels_returned():
    sleep = Sleep()
    assert sleep.answered(["a", "b", "c"], "hrb") == ["c"]
    assert sleep.held == {"a"} and sleep.relying == {"b"}
    # A held key is not asked for again; relying ones are (their holder may be gone).
    assert sleep.to_request(["a", "b", "c"]) == ["b", "c"]
    with pytest.raises(ValueError, match="expected 2 answers"):
        sleep.answered(["a", "b"], "h")


def test_a_key_given_back_on_a_notify_no_longer_covers_its_channel():
    # The lost wake-up this guards against: a reader asleep on a key gets a
    # NOTIFY and gives the key back; if it then finds nothing new and went
    # back to waiting without asking again, no writer would wake it.
    sleep = Sleep()
    sleep.answered(["a", "b"], "hr")
    assert sleep.covers(["a", "b"])
    assert sleep.woken("a") is True  # held: give it back
    assert not sleep.covers(["a", "b"])
    assert sleep.woken("b") is False  # relying: nothing to give back
    assert sleep.to_request(["a", "b"]) == ["a", "b"]


def test_a_lost_connection_forgets_every_key():
    sleep = Sleep()
    sleep.answered(["a", "b"], "hr")
    sleep.forget()
    assert not sleep.covers(["a"]) and sleep.held == set() and sleep.relying == set()


def test_busy_polls_double_up_to_their_cap_and_reset():
    poll = BusyPoll(first=0.001, maximum=0.004)
    assert [poll.next() for _ in range(4)] == [0.001, 0.002, 0.004, 0.004]
    poll.reset()
    assert poll.next() == 0.001


def test_event_ids_round_trip_and_refuse_what_is_not_theirs():
    tag = database_tag(16384, "app")
    position = Position(123456789, 42)
    assert Position.decode(position.encode(tag), tag) == position
    assert Position.before_transaction(100) == Position(99, LAST)
    assert Position(99, LAST) < Position(100, 0)
    with pytest.raises(InvalidCheckpoint, match="another database"):
        Position.decode(position.encode(tag), database_tag(1, "other"))
    with pytest.raises(InvalidCheckpoint, match="not an event id"):
        Position.decode("123-42", tag)
