"""The notification context: a dict attached to the notifications of a transaction.

:func:`set_notification_context` stores it in the session setting
``pgpubsub.notification_context``, which the triggers and
``pgpubsub_publish_v1()`` read and copy into every event they publish.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import connections
from django.db.utils import InternalError
from psycopg import errors

from . import conf, sql


def set_notification_context(context: dict[str, Any], using: str | None = None) -> None:
    """Attach ``context`` to the notifications sent later in this transaction.

    Trigger notifications and :func:`pgpubsub.notify` calls made afterwards
    carry the dict; listeners receive it as ``context`` when they declare that
    parameter (and, with ``PGPUBSUB_PASS_CONTEXT_TO_LISTENERS = True``, every
    trigger listener and every app-level listener taking ``**kwargs``).

    By default (``PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT = True``) the context
    ends with the transaction and must be set inside ``transaction.atomic()``.
    With that setting ``False`` it lasts for the rest of the database session.
    """
    if not isinstance(context, dict):
        raise TypeError(f"notification context must be a dict, got {type(context).__name__}")
    conn = connections[using or "default"]
    if conn.needs_rollback:
        return
    tx_bound = conf.tx_bound_notification_context()
    if tx_bound and not conn.in_atomic_block:
        raise RuntimeError(
            "set_notification_context() must be called inside transaction.atomic() because "
            "the context is bound to the transaction (PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT). "
            "Wrap the code in atomic(), or set PGPUBSUB_TX_BOUND_NOTIFICATION_CONTEXT = False "
            "to keep the context for the whole database session."
        )
    encoded = json.dumps(context, default=str)
    with conn.cursor() as cursor:
        try:
            cursor.execute(sql.SET_NOTIFICATION_CONTEXT, [encoded, tx_bound])
        except InternalError as exc:
            # An aborted transaction (SQLSTATE 25P02) will be rolled back, and
            # its notifications with it: there is nothing to attach a context
            # to. Recognised by its SQLSTATE, not its message, which is
            # translated under another lc_messages.
            if isinstance(exc.__cause__, errors.InFailedSqlTransaction):
                return
            raise
