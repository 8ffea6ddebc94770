"""Database tables of pgpubsub."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.utils import timezone

from .channel import MAX_CHANNEL_NAME_LENGTH


class NotificationState(models.TextChoices):
    """The state of a stored notification, as stored in its ``state`` column."""

    #: To be processed (now, or at ``available_at`` after a failure).
    PENDING = "pending", "Pending"
    #: Its attempts are spent: kept with its last error until retried or purged.
    DEAD = "dead", "Dead letter"


class Notification(models.Model):
    """A stored (durable) notification: one row of the transactional outbox.

    Rows are written in the writer's transaction by the channel's trigger or
    by :func:`pgpubsub.notify`, so a row exists if and only if that
    transaction committed. A worker claims rows with ``FOR UPDATE SKIP
    LOCKED``, runs the listeners and deletes the row in the same transaction.
    A row whose listeners keep failing is retried with backoff and finally
    kept with ``state = "dead"`` and its last error.
    """

    PENDING = NotificationState.PENDING
    DEAD = NotificationState.DEAD

    id = models.BigAutoField(primary_key=True)
    #: The database name of the channel (``Channel.listen_safe_name()``).
    channel = models.CharField(max_length=MAX_CHANNEL_NAME_LENGTH)
    #: The event: ``app``/``model``/``old``/``new``/``context``/``trigger``/``op``
    #: for a trigger, ``kwargs`` (and ``context``) for ``notify()``.
    payload = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    #: How many times processing was attempted and failed.
    attempts = models.IntegerField(default=0)
    #: ``pending`` (to be processed) or ``dead`` (dead letter, kept for inspection).
    state = models.CharField(
        max_length=16, choices=NotificationState.choices, default=NotificationState.PENDING
    )
    #: When a pending notification that failed may next be tried (``None``: now).
    available_at = models.DateTimeField(null=True, blank=True)
    #: The last failure's exception and traceback (``None`` until one fails).
    last_error = models.TextField(null=True, blank=True)

    class Meta:
        db_table = "pgpubsub_notification"
        ordering = ["id"]
        # No secondary index: every durable trigger writes rows here, and each
        # index (or CHECK, or column default) makes every write slower. Claims
        # walk the primary key (see pgpubsub.sql.CLAIM); the bookkeeping
        # columns stay NULL until a notification fails.

    def __str__(self) -> str:
        return f"Notification {self.pk} on {self.channel} ({self.state})"

    def __repr__(self) -> str:
        return (
            f"Notification(id={self.pk}, channel={self.channel!r}, state={self.state!r}, "
            f"attempts={self.attempts}, created_at={self.created_at!r})"
        )

    @classmethod
    def from_channel(cls, channel: Any) -> models.QuerySet[Notification]:
        """Stored notifications of a channel class (django-pgpubsub 1.3.1 helper)."""
        return cls.objects.filter(channel=channel.listen_safe_name())


class StoredPayload(models.Model):
    """A broadcast payload too large for a NOTIFY (over 7999 bytes).

    The NOTIFY carries only this row's id. Rows are deleted by the workers
    after ``PGPUBSUB_PAYLOAD_RETENTION`` seconds.
    """

    id = models.BigAutoField(primary_key=True)
    channel = models.CharField(max_length=MAX_CHANNEL_NAME_LENGTH)
    payload = models.TextField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        db_table = "pgpubsub_payload"

    def __str__(self) -> str:
        return f"Stored payload {self.pk} on {self.channel}"
