"""Tables written by the producers and by the listeners.

``BroadcastRow`` and ``DurableRow`` carry one listener trigger each (see
``listeners.py``); ``PlainRow`` has the same columns and no trigger, the
reference for the write-path workload. The ``Timed*Row`` tables of the
concurrent-writers workload (8) also record when each row was inserted, so
the harness can measure commit-to-listener latency without asking the
writers (pgbench) anything. ``Processed`` is what the listeners write: one
row per event they handle, so the harness can count lost and duplicated
events and read the time each was handled.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Func


class SourceRow(models.Model):
    n = models.IntegerField()
    label = models.CharField(max_length=32, default="")

    class Meta:
        abstract = True


class BroadcastRow(SourceRow):
    pass


class DurableRow(SourceRow):
    pass


class PlainRow(SourceRow):
    pass


class LiveRow(SourceRow):
    """Published on a retained channel with no listener: what subscriptions
    (``pgpubsub.subscribe``, workloads 9 and 10) and browser streams
    (workloads 11 and 12) read. With django-pgpubsub 1.3.1 it has no trigger.
    """


class TimedRow(SourceRow):
    #: Set by the database when the row is inserted: slightly before its commit.
    inserted_at = models.DateTimeField(
        db_default=Func(function="clock_timestamp", output_field=models.DateTimeField())
    )

    class Meta:
        abstract = True


class TimedPlainRow(TimedRow):
    """No trigger: the reference of workload 8."""


class TimedBroadcastRow(TimedRow):
    pass


class TimedDurableRow(TimedRow):
    pass


class TimedRetainedRow(TimedRow):
    """Published on a channel with ``retention`` when the installed pgpubsub has it."""


class Processed(models.Model):
    #: Which listener wrote the row (see ``listeners.py``).
    kind = models.CharField(max_length=16)
    #: The event's key: the source row's id, or the ``n`` of a notify() message.
    ref = models.BigIntegerField()
    #: ``time.time()`` when the listener ran.
    seen_at = models.FloatField()
    #: The worker's process id.
    worker = models.IntegerField()
