"""Managing stored (durable) notifications from Python: backlog and dead letters.

The ``pgpubsub`` management command offers the same operations.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from django.db import connections, transaction
from django.db.models import QuerySet
from django.utils import timezone

from . import conf, sql, store
from .channel import BaseChannel, locate_channel
from .connector import SyncConnector
from .models import Notification, NotificationState


def _channel_names(channels: Iterable[type[BaseChannel] | str] | None) -> list[str] | None:
    if channels is None:
        return None
    return [locate_channel(channel).listen_safe_name() for channel in channels]


def dead_letters(
    channels: Iterable[type[BaseChannel] | str] | None = None, *, using: str | None = None
) -> QuerySet[Notification]:
    """Dead-lettered notifications (optionally of some channels), oldest first."""
    queryset = Notification.objects.using(using or conf.database_alias()).filter(
        state=Notification.DEAD
    )
    names = _channel_names(channels)
    if names is not None:
        queryset = queryset.filter(channel__in=names)
    return queryset.order_by("id")


def retry_dead_letters(
    channels: Iterable[type[BaseChannel] | str] | None = None,
    *,
    ids: Iterable[int] | None = None,
    using: str | None = None,
) -> int:
    """Make dead letters pending again with a fresh set of attempts; return how many.

    Workers are woken on the affected channels when the transaction commits.
    """
    alias = using or conf.database_alias()
    queryset = dead_letters(channels, using=alias)
    if ids is not None:
        queryset = queryset.filter(id__in=list(ids))
    with transaction.atomic(using=alias):
        names = sorted(set(queryset.values_list("channel", flat=True)))
        count = queryset.update(state=Notification.PENDING, attempts=0, available_at=timezone.now())
        with connections[alias].cursor() as cursor:
            for name in names:
                cursor.execute(sql.NOTIFY, [name, ""])
    return count


def purge_dead_letters(
    channels: Iterable[type[BaseChannel] | str] | None = None,
    *,
    ids: Iterable[int] | None = None,
    older_than: datetime.timedelta | None = None,
    using: str | None = None,
) -> int:
    """Delete dead letters (optionally only those older than ``older_than``); return how many."""
    queryset = dead_letters(channels, using=using)
    if ids is not None:
        queryset = queryset.filter(id__in=list(ids))
    if older_than is not None:
        queryset = queryset.filter(created_at__lt=timezone.now() - older_than)
    count, _ = queryset.delete()
    return count


def backlog(*, using: str | None = None) -> dict[str, dict[str, Any]]:
    """Per database channel name: pending and dead counts and the oldest pending ``created_at``."""
    result: dict[str, dict[str, Any]] = {}
    for row in SyncConnector(using or conf.database_alias()).run(store.backlog()):
        entry = result.setdefault(row.channel, {"pending": 0, "dead": 0, "oldest_pending": None})
        entry[row.state] = row.notifications
        if row.state == NotificationState.PENDING:
            entry["oldest_pending"] = row.oldest
    return result
