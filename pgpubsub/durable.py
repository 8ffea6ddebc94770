"""Delivering durable notifications: claims from the outbox, processed exactly once.

A drain claims the due notifications of some channels in batches, walking
the outbox's primary key forward (keyset), and runs their listeners in the
claim's transaction, so their database effects commit together with the
notification's removal. Optimistically, a batch is claimed and deleted by
one statement and its listeners run without savepoints; guarded, each
notification runs in a savepoint of its own and a failure is recorded on
its row: retried after a backoff, or dead-lettered once its attempts are
spent (see :mod:`pgpubsub.delivery` for when each strategy applies).

The queries are :mod:`pgpubsub.store`'s. A drain returns the times at
which the retries it scheduled fall due, so that the worker can look for
them then; it keeps no schedule of its own.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from django.db.models import Q
from django.utils.module_loading import import_string

from . import conf, store
from .calling import call_listener, listener_kwargs
from .channel import BaseChannel, TriggerChannel
from .delivery import (
    Delivery,
    Rollback,
    report_dead_lettered,
    report_failure,
    report_processed,
    report_received,
    report_retried,
)
from .models import NotificationState
from .observe import observers
from .store import ClaimedNotification
from .wire import decode_stored_event

logger = logging.getLogger("pgpubsub")

#: Database channel name (or dotted path) -> channel, for the rows of a drain.
ByName = dict[str, type[BaseChannel]]
Claim = Callable[[ByName, int, int, "Q | None"], list[ClaimedNotification]]


def never() -> bool:
    """The stop check of a drain that runs until nothing is due."""
    return False


class Drained(NamedTuple):
    """What a drain did: how many notifications it claimed, and the retries it scheduled."""

    claimed: int
    #: The monotonic times at which the retries it scheduled fall due.
    retries: list[float]


class DurableDelivery(Delivery):
    """Claims and processes stored notifications on the Django connection ``using``."""

    def __init__(self, using: str) -> None:
        super().__init__(using)
        self._filter_provider: Any = None
        # The listener running, named in the log when a notification fails.
        self._running: str | None = None
        # The retries scheduled by the drain in progress.
        self._scheduled: list[float] = []

    def drain(
        self,
        channels: Sequence[type[BaseChannel]],
        *,
        batch_size: int | None = None,
        stopping: Callable[[], bool] = never,
        retries: bool = True,
        after: int = 0,
        limit: int | None = None,
    ) -> Drained:
        """Process the stored notifications of ``channels`` until none are due.

        Returns how many notifications it claimed and the monotonic times at
        which the retries it scheduled fall due. ``batch_size`` defaults to ``PGPUBSUB_BATCH_SIZE``;
        ``stopping`` is asked before each batch. Only notifications with an
        id above ``after`` are claimed, and at most ``limit`` of them
        (``None``: no limit); :mod:`pgpubsub.testing` uses both to deliver
        the notifications a test published, one generation at a time.

        Claims go forward by id (keyset), so each claim reads only fresh index
        entries however large the backlog; notifications skipped because
        another worker holds them, or not yet due, are found by the next drain.

        With optimistic batches, notifications that have failed before are
        claimed by a guarded pass of their own, run only when ``retries`` is
        true (the worker's sweeps, which also run when a retry falls due), so
        a wake-up costs no extra query.
        """
        size = batch_size or conf.batch_size()
        by_name = {channel.listen_safe_name(): channel for channel in channels}
        # django-pgpubsub 1.3.1's notify() stores rows under the dotted path;
        # processes still on 1.3.1 during a rolling deploy keep writing them.
        by_name.update({channel.name(): channel for channel in channels})
        scheduled: list[float] = []
        self._scheduled = scheduled
        # A listener filter is a Q over the ORM, so it always claims guarded.
        if not self.optimistic or self._extra_filter() is not None:
            claimed = self._pass(by_name, size, stopping, self._guarded, after, limit)
        else:
            claimed = self._pass(by_name, size, stopping, self._first_attempts, after, limit)
            if retries and (limit is None or claimed < limit):
                rest = None if limit is None else limit - claimed
                claimed += self._pass(by_name, size, stopping, self._retries, after, rest)
        return Drained(claimed, scheduled)

    def _extra_filter(self) -> Q | None:
        path = conf.listener_filter()
        if not path:
            return None
        if self._filter_provider is None:
            self._filter_provider = import_string(path)()
        return self._filter_provider.get_filter() or Q()

    def _pass(
        self,
        by_name: ByName,
        size: int,
        stopping: Callable[[], bool],
        claim: Claim,
        after: int,
        limit: int | None,
    ) -> int:
        """Claim and process batches with ``claim`` from ``after`` up, until none is left.

        Returns how many notifications it claimed (at most ``limit``).
        """
        claimed = 0
        while not stopping():
            if limit is not None:
                size = min(size, limit - claimed)
                if size <= 0:
                    break
            rows = claim(by_name, after, size, self._extra_filter())
            claimed += len(rows)
            if not rows:
                break
            after = rows[-1].id
            if len(rows) < size:
                break
        return claimed

    def _first_attempts(
        self, by_name: ByName, after: int, size: int, extra: Q | None
    ) -> list[ClaimedNotification]:
        """An optimistic batch of notifications never tried; replayed guarded if one fails."""
        try:
            return self._optimistic(by_name, after, size)
        except Rollback:
            logger.debug("pgpubsub: a durable batch failed; replaying it guarded")
            return self._guarded(by_name, after, size, extra)

    def _retries(
        self, by_name: ByName, after: int, size: int, extra: Q | None
    ) -> list[ClaimedNotification]:
        return self._guarded(by_name, after, size, extra, retries_only=True)

    def _optimistic(self, by_name: ByName, after: int, size: int) -> list[ClaimedNotification]:
        """Claim, delete and process a batch in one transaction with no savepoint."""
        with self.connector.transaction():
            claimed = self.connector.run(store.claim_and_delete(after, list(by_name), size))
            rows = sorted(claimed)
            try:
                done = self.run_all(rows, lambda row: self._run(by_name[row.channel], row.payload))
            except Exception as exc:
                self.reraise_if_lost(exc)
                raise Rollback from exc
        # Counted once the batch is done: a failed batch is counted by its replay.
        self._report_received(by_name, rows)
        for row, duration in done:
            report_processed(by_name[row.channel], duration, row.created_at.timestamp(), row.id)
        return rows

    def _guarded(
        self,
        by_name: ByName,
        after: int,
        size: int,
        extra: Q | None,
        retries_only: bool = False,
    ) -> list[ClaimedNotification]:
        """Claim a batch and process each notification in its own savepoint."""
        with self.connector.transaction():
            rows = self._claim(by_name, after, size, extra, retries_only)
            self._report_received(by_name, rows)
            completed = []
            for row in rows:
                channel = by_name[row.channel]
                started = time.monotonic()
                self._running = None
                error = self.in_savepoint(self._run, channel, row.payload)
                if error is None:
                    completed.append(row.id)
                    report_processed(
                        channel, time.monotonic() - started, row.created_at.timestamp(), row.id
                    )
                else:
                    report_failure(channel, self._running, error, row.id)
                    self._fail(channel, row, error)
            if completed:
                self.connector.run(store.complete(completed))
        return rows

    def _claim(
        self, by_name: ByName, after: int, size: int, extra: Q | None, retries_only: bool
    ) -> list[ClaimedNotification]:
        names = list(by_name)
        if extra is None:
            return self.connector.run(store.claim(after, names, size, retries_only=retries_only))
        return store.claim_filtered(
            self.using, after, names, size, extra, retries_only=retries_only
        )

    @staticmethod
    def _report_received(by_name: ByName, rows: list[ClaimedNotification]) -> None:
        if rows and observers():
            for name, count in Counter(row.channel for row in rows).items():
                report_received(by_name[name], count)

    def _run(self, channel: type[BaseChannel], payload: str) -> None:
        """Run the listeners of one stored notification (``_running`` names the one running)."""
        event = decode_stored_event(payload)
        if issubclass(channel, TriggerChannel):
            channel.row_decoder().check_model(event.app, event.model, required=True)
        kwargs = listener_kwargs(channel, event, self.using)
        for call in self.calls(channel, event.trigger):
            self._running = call.listener.name
            call_listener(call, kwargs, event.context)

    def _fail(
        self, channel: type[BaseChannel], row: ClaimedNotification, exc: BaseException
    ) -> None:
        """Record a failed attempt: schedule its retry, or dead-letter it."""
        attempts = row.attempts + 1
        delay = store.retry_delay(attempts)
        error = "".join(traceback.format_exception(exc))
        failed = store.fail(row.id, error, channel.effective_max_attempts(), delay)
        if self.connector.run(failed) is NotificationState.DEAD:
            report_dead_lettered(channel, row.id, attempts)
        else:
            self._scheduled.append(time.monotonic() + delay)
            report_retried(channel)
