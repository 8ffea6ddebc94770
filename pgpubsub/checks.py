"""pgpubsub's Django system checks (registered by :class:`pgpubsub.apps.PgpubsubConfig`).

* ``pgpubsub.W002`` (tagged ``database``): drift between the code and the
  database ``PGPUBSUB_DATABASE`` that ``migrate`` alone would not fix (see
  :mod:`pgpubsub.drift`). Django runs database checks only for the
  databases it is given: ``manage.py check --database default``,
  ``migrate`` and ``test``, not ``runserver``. Drift that applying the
  pending migrations fixes is left out: Django reports those migrations
  itself, and ``migrate`` is about to apply them when it runs the checks.
* ``pgpubsub.W003``: the drift could not be read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core import checks
from django.db import DatabaseError

from . import conf, drift, status


def drift_check(
    app_configs: Sequence[Any] | None = None,
    databases: Sequence[str] | None = None,
    **kwargs: Any,
) -> list[checks.CheckMessage]:
    """``pgpubsub.W002``: one warning per problem between code and database."""
    alias = conf.database_alias()
    if not databases or alias not in databases:
        return []
    try:
        report = status.collect(alias)
        facts = drift.MigrationFacts.read(alias) if drift.needs_facts(report) else None
        problems = drift.find(report, None, facts)
    except DatabaseError as exc:
        return [
            checks.Warning(
                f"cannot compare pgpubsub's triggers with the code in database {alias!r}: "
                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}",
                id="pgpubsub.W003",
            )
        ]
    return [
        checks.Warning(
            problem.message,
            hint="`python manage.py pgpubsub status` shows every channel and trigger.",
            id="pgpubsub.W002",
        )
        for problem in problems
        if not problem.fixed_by_migrate
    ]


def register() -> None:
    """Register pgpubsub's checks with Django (idempotent)."""
    checks.register(drift_check, checks.Tags.database)
