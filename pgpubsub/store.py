"""The outbox store: what delivery asks of pgpubsub's tables, as queries.

Durable notifications are rows of ``pgpubsub_notification`` (the model
:class:`pgpubsub.models.Notification`); broadcast payloads too large for a
NOTIFY are rows of ``pgpubsub_payload``. Each function here builds a
:class:`pgpubsub.connector.Query` from the statements of :mod:`pgpubsub.sql`
and reads its rows into typed values (:class:`ClaimedNotification`,
:class:`~pgpubsub.models.NotificationState`); it does no I/O itself, so the
same store serves the sync worker and code running in an event loop. The
exception is :func:`claim_filtered`: a listener filter is a ``Q`` over the
ORM, so that claim is made by the ORM on a Django connection.

The retry policy of a failed notification is here too: :func:`retry_delay`.
"""

from __future__ import annotations

import datetime
from typing import NamedTuple

from django.db.models import Q, TextField
from django.db.models.functions import Cast, Now

from . import conf, sql
from .backoff import exponential_delay
from .connector import Query, Row, first_row, no_result, rows_as
from .models import Notification, NotificationState


class ClaimedNotification(NamedTuple):
    """A stored notification claimed by a worker (locked until its transaction ends)."""

    #: Its primary key, also its position in the outbox (claims walk it forward).
    id: int
    #: The database channel name it was stored under.
    channel: str
    #: The event, as JSON text.
    payload: str
    #: How many times processing failed before this claim.
    attempts: int
    created_at: datetime.datetime


_claimed = rows_as(ClaimedNotification)


def claim(
    after: int, channels: list[str], limit: int, *, retries_only: bool = False
) -> Query[list[ClaimedNotification]]:
    """Lock the next ``limit`` due notifications of ``channels`` with an id above ``after``.

    With ``retries_only``, only notifications that have failed before.
    """
    statement = sql.CLAIM_RETRIES if retries_only else sql.CLAIM
    return Query(statement, [after, channels, limit], _claimed)


def claim_and_delete(
    after: int, channels: list[str], limit: int
) -> Query[list[ClaimedNotification]]:
    """Take the next ``limit`` due first attempts of ``channels`` after ``after``: locked, deleted.

    The deletion commits only with the claim's transaction; a rollback
    returns the rows untouched.
    """
    return Query(sql.CLAIM_AND_DELETE, [after, channels, limit], _claimed)


def claimable(after: int, channels: list[str], *, retries_only: bool = False) -> Q:
    """The ORM form of the claims' predicate (the WHERE clause of ``sql.CLAIM``)."""
    due = Q(available_at__isnull=True) | Q(available_at__lte=Now())
    found = due & Q(id__gt=after, channel__in=channels, state=NotificationState.PENDING)
    return found & Q(attempts__gt=0) if retries_only else found


def claim_filtered(
    using: str,
    after: int,
    channels: list[str],
    limit: int,
    extra: Q,
    *,
    retries_only: bool = False,
) -> list[ClaimedNotification]:
    """:func:`claim`, narrowed by a listener filter's ``extra`` ``Q``, through the ORM."""
    queryset = (
        Notification.objects.using(using)
        .filter(claimable(after, channels, retries_only=retries_only))
        .filter(extra)
        .order_by("id")
        .select_for_update(skip_locked=True)
        .annotate(payload_text=Cast("payload", TextField()))
        .values_list("id", "channel", "payload_text", "attempts", "created_at")
    )
    return _claimed(list(queryset[:limit]))


def complete(ids: list[int]) -> Query[None]:
    """Delete notifications whose listeners have all succeeded."""
    return Query(sql.DELETE_NOTIFICATIONS, [ids])


def _state(rows: list[Row]) -> NotificationState | None:
    row = first_row(rows)
    return None if row is None else NotificationState(row[0])


def fail(
    notification_id: int, error: str, max_attempts: int, delay: float
) -> Query[NotificationState | None]:
    """Count a failed attempt: retry after ``delay`` seconds, or dead-letter at ``max_attempts``.

    Returns the notification's new state (``None`` if it no longer exists).
    """
    params = {"id": notification_id, "error": error, "max_attempts": max_attempts, "delay": delay}
    return Query(sql.FAIL_NOTIFICATION, params, _state)


def retry_delay(attempts: int) -> float:
    """Seconds before retry number ``attempts`` (1-based) of a failed durable notification."""
    return exponential_delay(attempts, conf.retry_backoff(), conf.retry_backoff_max())


class BacklogRow(NamedTuple):
    """Stored notifications of one channel in one state."""

    #: The database channel name.
    channel: str
    state: str
    #: How many notifications.
    notifications: int
    #: When the oldest of them was stored.
    oldest: datetime.datetime
    #: Its age in seconds, by the database's clock.
    age: float


def backlog() -> Query[list[BacklogRow]]:
    """The stored notifications, counted per database channel name and state."""
    return Query(sql.BACKLOG, None, rows_as(BacklogRow))


def _payload(rows: list[Row]) -> str | None:
    row = first_row(rows)
    return None if row is None else str(row[0])


def fetch_payload(ref: int) -> Query[str | None]:
    """The broadcast payload stored as ``ref`` (``None`` once it has expired)."""
    return Query(sql.FETCH_PAYLOAD, [ref], _payload)


def delete_expired_payloads(retention: float) -> Query[None]:
    """Delete the stored broadcast payloads older than ``retention`` seconds."""
    return Query(sql.DELETE_EXPIRED_PAYLOADS, [retention], no_result)
