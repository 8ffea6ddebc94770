"""pgpubsub's Django system checks (registered by :class:`pgpubsub.apps.PgpubsubConfig`).

* ``pgpubsub.E001``: a listener cannot take the arguments its channel's
  events are delivered with (a ``def bad(new)`` on a trigger channel). A
  check rather than an exception at decoration time: an exception would
  abort app loading in every process, web servers included, although only
  the worker runs listeners; the check stops ``listen``, ``runserver``,
  ``migrate`` and ``check`` with every bad listener listed at once and the
  signature to write, and leaves the import alone.
* ``pgpubsub.W001``: an app migration whose triggers use pgpubsub's SQL
  does not depend on the pgpubsub migration that installs it; the warning
  gives the line to add (see :mod:`pgpubsub.migration_order`).
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

import inspect
from collections.abc import Sequence
from typing import Any

from django.core import checks
from django.db import DatabaseError

from . import conf, drift, migration_order, status
from .calling import argument_names, receives_context
from .channel import TriggerChannel
from .exceptions import PgpubsubError
from .registry import Listener, registry

#: Tag of pgpubsub's checks that need no database (``manage.py check --tag pgpubsub``).
TAG = "pgpubsub"


def _arguments(listener: Listener, pass_context: bool) -> tuple[list[str], bool]:
    """The keyword arguments the worker calls ``listener`` with, and whether
    ``context`` is among them."""
    return argument_names(listener.channel), receives_context(listener, pass_context)


def _signature_error(listener: Listener, pass_context: bool) -> checks.CheckMessage | None:
    try:
        signature = inspect.signature(listener.callback)
        names, context = _arguments(listener, pass_context)
    except (TypeError, ValueError):  # no signature to read (a builtin): nothing to check
        return None
    except PgpubsubError:  # a channel that cannot be used fails at start-up with its own error
        return None
    try:
        signature.bind(**dict.fromkeys([*names, *(["context"] if context else [])]))
    except TypeError as exc:
        problem = str(exc)
    else:
        return None
    channel = listener.channel
    function = getattr(listener.callback, "__name__", "listener")
    if issubclass(channel, TriggerChannel):
        called = "the keyword arguments old and new"
    else:
        called = "its fields as keyword arguments" if names else "no arguments"
    if context and not listener.wants_context:
        # PGPUBSUB_PASS_CONTEXT_TO_LISTENERS makes context compulsory.
        called += " and context (PGPUBSUB_PASS_CONTEXT_TO_LISTENERS is on)"
        forms = f"{function}({', '.join([*names, 'context'])})"
    else:
        forms = f"{function}({', '.join(names)}) or {function}({', '.join([*names, 'context'])})"
    return checks.Error(
        f"{function}{signature} cannot take the events of {channel.name()}: {problem}",
        hint=(
            f"A listener of {channel.name()} is called with {called}: declare it as {forms}; "
            "**kwargs is accepted too."
        ),
        obj=listener.name,
        id="pgpubsub.E001",
    )


def listener_signatures_check(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """``pgpubsub.E001``: every listener can take the arguments of its channel's events."""
    pass_context = conf.pass_context_to_listeners()
    found = []
    for listeners in registry.values():
        for listener in listeners:
            error = _signature_error(listener, pass_context)
            if error is not None:
                found.append(error)
    return found


def migration_dependencies_check(
    app_configs: Sequence[Any] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """``pgpubsub.W001``: app migrations using pgpubsub's SQL depend on its installer."""
    found: list[checks.CheckMessage] = []
    for missing in migration_order.missing_dependencies():
        app_label, name = missing.migration
        numbers = sorted(missing.versions)
        versions = ("versions " if len(numbers) > 1 else "version ") + ", ".join(
            str(version) for version in numbers
        )
        where = missing.path or f"the migration {app_label}.{name}"
        ordered = (
            f"pgpubsub runs it after {missing.required[0]}.{missing.required[1]} all the "
            "same; to make the order explicit, add"
            if missing.ordered
            else "pgpubsub cannot read its source to order it, so `migrate` may run it first "
            "and fail at the first write of its table. Add"
        )
        found.append(
            checks.Warning(
                f"migration {app_label}.{name} installs triggers that use pgpubsub's SQL "
                f"({versions}), which the migration {missing.required[0]}."
                f"{missing.required[1]} installs, but it does not depend on that migration",
                hint=(
                    f"{ordered} this line to the dependencies of {where}:\n"
                    f"    {missing.required!r},"
                ),
                id="pgpubsub.W001",
            )
        )
    return found


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
    checks.register(listener_signatures_check, TAG)
    checks.register(migration_dependencies_check, TAG)
    checks.register(drift_check, checks.Tags.database)
