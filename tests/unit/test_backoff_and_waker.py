"""The one backoff rule and the one self-pipe wait (no database)."""

from __future__ import annotations

import os
import threading
import time

import pytest

from pgpubsub.backoff import Backoff, exponential_delay
from pgpubsub.selfpipe import Waker


def test_the_delay_doubles_from_the_first_up_to_the_maximum():
    assert [exponential_delay(n, 0.5, 3.0) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert exponential_delay(0, 0.5, 3.0) == 0.5


def test_a_long_outage_does_not_overflow():
    # 2**1100 cannot be made a float; thousands of failed reconnects used to get there.
    assert exponential_delay(5_000, 0.2, 15.0) == 15.0
    backoff = Backoff(0.2, 15.0, jitter=True)
    backoff.attempt = 10_000
    assert 7.5 <= backoff.next() <= 15.0


def test_backoff_counts_failures_until_reset():
    backoff = Backoff(1.0, 60.0)
    assert [backoff.next() for _ in range(4)] == [1.0, 2.0, 4.0, 8.0]
    backoff.reset()
    assert backoff.next() == 1.0


def test_jitter_keeps_each_delay_between_half_and_all_of_it():
    backoff = Backoff(1.0, 60.0, jitter=True)
    delays = [backoff.next() for _ in range(4)]
    for delay, full in zip(delays, [1.0, 2.0, 4.0, 8.0]):
        assert full / 2 <= delay <= full


def test_a_wake_from_another_thread_ends_the_wait():
    waker = Waker()
    try:
        threading.Timer(0.05, waker.wake).start()
        started = time.monotonic()
        assert waker.wait(timeout=10) == []
        assert time.monotonic() - started < 5
        # The wake-up was consumed: the next wait times out.
        assert waker.wait(timeout=0) == []
    finally:
        waker.close()


def test_wait_returns_the_readable_descriptors():
    read, write = os.pipe()
    waker = Waker()
    try:
        assert waker.wait([read], timeout=0) == []
        os.write(write, b"x")
        assert waker.wait([read], timeout=10) == [read]
    finally:
        waker.close()
        os.close(read)
        os.close(write)


def test_a_wake_after_close_writes_nowhere():
    waker = Waker()
    waker.close()
    # The descriptor numbers may belong to another file by now.
    read, write = os.pipe()
    try:
        waker.wake()
        os.set_blocking(read, False)
        with pytest.raises(BlockingIOError):
            os.read(read, 1)
    finally:
        os.close(read)
        os.close(write)
