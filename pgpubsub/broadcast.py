"""Delivering broadcast notifications: NOTIFY payloads received together, as one batch.

Each NOTIFY payload is decoded (:mod:`pgpubsub.wire`, no I/O); a payload
too large for a NOTIFY arrives as a reference, and its stored text is
fetched as an explicit step (:func:`pgpubsub.store.fetch_payload`). The
events of the batch then run in one transaction on the Django connection,
optimistically under one savepoint, or guarded with one savepoint per
listener call (see :mod:`pgpubsub.delivery`). A broadcast is at most once:
a listener that fails is logged and counted, and the others still run.

Stored payloads are deleted once older than ``PGPUBSUB_PAYLOAD_RETENTION``,
at most every minute, by the workers that read them.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import msgspec

from . import conf, store
from .calling import ListenerCall, call_listener, listener_kwargs
from .channel import BaseChannel
from .delivery import (
    Delivery,
    Rollback,
    report_failure,
    report_processed,
    report_received,
    report_skipped,
)
from .eventlog import LogRow
from .exceptions import PayloadError
from .wire import Event, Message, event_decoder, message_decoder, preview

logger = logging.getLogger("pgpubsub")


@dataclass
class _Item:
    """One broadcast event and the listeners it goes to."""

    channel: type[BaseChannel]
    calls: list[ListenerCall]
    event: Event
    context: dict[str, Any] | None
    published: float | None
    payload: str


class BroadcastDelivery(Delivery):
    """Delivers broadcast NOTIFY payloads on the Django connection ``using``."""

    def __init__(self, using: str) -> None:
        super().__init__(using)
        self._next_cleanup = 0.0

    def deliver(self, received: list[tuple[type[BaseChannel], str]]) -> None:
        """Deliver NOTIFY payloads received together (channel, payload), in one transaction."""
        batch: list[_Item] = []
        spilled = False
        for channel, payload in received:
            message = self._decode(channel, payload)
            if message is None:
                continue
            spilled = spilled or message.ref is not None
            report_received(channel, len(message.events))
            for event in message.events:
                calls = self.calls(channel, event.trigger or message.trigger)
                if calls:
                    context = event.context if event.context is not None else message.context
                    batch.append(_Item(channel, calls, event, context, message.ts, payload))
        self._run_batch(batch)
        if spilled:
            self._delete_expired_payloads()

    def deliver_rows(self, rows: list[tuple[type[BaseChannel], LogRow]]) -> None:
        """Deliver events read from an event table (one event per row), in one transaction."""
        batch: list[_Item] = []
        received: Counter[type[BaseChannel]] = Counter()
        for channel, row in rows:
            try:
                event = event_decoder.decode(row.payload)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                report_skipped(
                    channel,
                    "pgpubsub: skipped a malformed event on %s (%s): %s",
                    channel.name(),
                    exc,
                    preview(row.payload),
                )
                continue
            received[channel] += 1
            calls = self.calls(channel, event.trigger)
            if calls:
                batch.append(
                    _Item(channel, calls, event, event.context, row.created_at, row.payload)
                )
        for channel, count in received.items():
            report_received(channel, count)
        self._run_batch(batch)

    def _run_batch(self, batch: list[_Item]) -> None:
        """Run a batch's listeners in one transaction: optimistically, else guarded."""
        if batch:
            with self.connector.transaction():
                if not (self.optimistic and self._optimistic(batch)):
                    self._guarded(batch)

    def _decode(self, channel: type[BaseChannel], payload: str) -> Message | None:
        """The message of a NOTIFY payload, its stored text fetched when it was too large."""
        try:
            message = message_decoder.decode(payload)
            if message.ref is not None:
                stored = self.connector.run(store.fetch_payload(message.ref))
                if stored is None:
                    raise PayloadError(
                        channel.name(),
                        f"stored payload {message.ref} no longer exists "
                        "(deleted after PGPUBSUB_PAYLOAD_RETENTION?)",
                    )
                ref = message.ref
                message = message_decoder.decode(stored)
                message.ref = ref
            return message
        except (msgspec.DecodeError, msgspec.ValidationError, PayloadError) as exc:
            report_skipped(
                channel,
                "pgpubsub: skipped a malformed notification on %s (%s): %s",
                channel.name(),
                exc,
                preview(payload),
            )
            return None

    def _run(self, item: _Item) -> None:
        try:
            kwargs = listener_kwargs(item.channel, item.event, self.using)
        except Exception as exc:
            # Never taken for a lost connection: the guarded replay reports it.
            raise Rollback from exc
        for call in item.calls:
            call_listener(call, kwargs, item.context)

    def _optimistic(self, batch: list[_Item]) -> bool:
        """Run the batch under one savepoint; ``False`` when it failed and was rolled back."""
        try:
            with self.connector.transaction():
                done = self.run_all(batch, self._run)
        except Exception as exc:
            self.reraise_if_lost(exc)
            logger.debug("pgpubsub: a broadcast batch failed; replaying it guarded")
            return False
        for item, duration in done:
            report_processed(item.channel, duration, item.published)
        return True

    def _guarded(self, batch: list[_Item]) -> None:
        """Run each listener call of the batch in a savepoint of its own."""
        for item in batch:
            channel = item.channel
            try:
                kwargs = listener_kwargs(channel, item.event, self.using)
            except Exception as exc:
                report_skipped(
                    channel,
                    "pgpubsub: skipped an undeliverable event on %s (%s: %s): %s",
                    channel.name(),
                    type(exc).__name__,
                    exc,
                    preview(item.payload),
                )
                continue
            started = time.monotonic()
            for call in item.calls:
                error = self.in_savepoint(call_listener, call, kwargs, item.context)
                if error is not None:
                    report_failure(channel, call.listener.name, error)
            report_processed(channel, time.monotonic() - started, item.published)

    def _delete_expired_payloads(self) -> None:
        now = time.monotonic()
        if now < self._next_cleanup:
            return
        retention = conf.payload_retention()
        self._next_cleanup = now + min(60.0, retention / 4)
        self.connector.run(store.delete_expired_payloads(retention))
