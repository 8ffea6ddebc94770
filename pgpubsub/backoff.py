"""Exponential backoff: the one rule for waiting longer after each failure.

Three things back off in pgpubsub, all by this rule: a worker reconnecting
to the database (:class:`Backoff` with jitter, so that workers cut off
together do not all come back at the same instant), the supervisor
restarting a worker that died young (one :class:`Backoff` per slot), and a
failed durable notification waiting for its next attempt
(:func:`exponential_delay` of its attempt number, see
:func:`pgpubsub.store.retry_delay`).
"""

from __future__ import annotations

import random

# 2**64 times any first delay is past every maximum worth having; capping
# the exponent keeps a long outage (thousands of attempts) from overflowing
# the float conversion of a huge power of two.
_MAX_EXPONENT = 64


def exponential_delay(attempt: int, first: float, maximum: float) -> float:
    """The delay before ``attempt`` (1-based): ``first``, doubled each time, at most ``maximum``."""
    exponent = min(max(0, attempt - 1), _MAX_EXPONENT)
    return min(maximum, first * 2.0**exponent)


class Backoff:
    """Counts consecutive failures and gives the delay before the next try.

    With ``jitter`` each delay is scaled by a random factor between 0.5 and 1.
    """

    def __init__(self, first: float, maximum: float, *, jitter: bool = False) -> None:
        self.first = first
        self.maximum = maximum
        self.jitter = jitter
        #: Failures since the last :meth:`reset`.
        self.attempt = 0

    def reset(self) -> None:
        """Forget the failures: the next delay is ``first`` again."""
        self.attempt = 0

    def next(self) -> float:
        """Count one more failure and return the delay before the next try."""
        self.attempt += 1
        delay = exponential_delay(self.attempt, self.first, self.maximum)
        return delay * random.uniform(0.5, 1.0) if self.jitter else delay
