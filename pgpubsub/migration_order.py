"""App migrations that install pgpubsub triggers run after the SQL those triggers use.

A trigger that calls ``pgpubsub_publish_v1()`` (or writes the outbox the way
version 1's column defaults allow) fails at the first write if it runs
before the pgpubsub migration that installs that version of the SQL, for
example in a data migration on a fresh database. The order is made right in
three ways, all driven by :data:`pgpubsub.sql.SQL_MIGRATIONS`:

* ``makemigrations`` writes the dependency into every new migration whose
  triggers use pgpubsub's SQL (:class:`AutodetectorMixin`, installed on the
  command's autodetector at start-up, as django-pgtrigger installs its own);
* each SQL-installing pgpubsub migration (:class:`InstallsSQL`) puts itself
  *before* the existing app migrations that use its version and lack the
  dependency (Django's ``run_before``), found by reading the migration files'
  text: no import, no database. Only a migration that uses the version is
  ordered after the migration that installs it, so a database migrated in
  any working order stays consistent: a migration applied before the SQL it
  uses was installed would have failed at the first write of its table;
* the system check ``pgpubsub.W001`` names every such migration and the
  dependency line to add to it (see :func:`missing_dependencies`).
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import importlib
import importlib.util
import os
import pkgutil
from collections.abc import Iterable, Iterator
from typing import Any

from django.apps import apps
from django.db import migrations

from .sql import SQL_MIGRATIONS, sql_versions_used

APP_LABEL = "pgpubsub"

# (path, mtime, size) -> versions used: a loader is built several times per
# command (migrate, test), and the files rarely change in between.
_scanned: dict[tuple[str, int, int], frozenset[int]] = {}
_ordering = True


def required_migration(versions: set[int] | frozenset[int]) -> tuple[str, str] | None:
    """The pgpubsub migration a migration using SQL ``versions`` must depend on."""
    known = [version for version in versions if version in SQL_MIGRATIONS]
    if not known:
        return None
    return (APP_LABEL, SQL_MIGRATIONS[max(known)])


def _operations_versions(operations: Iterable[Any]) -> set[int]:
    """The SQL versions used by the triggers (and raw SQL) of migration operations."""
    used: set[int] = set()
    for operation in operations:
        trigger = getattr(operation, "trigger", None)
        text = getattr(trigger, "install_sql", None)
        if text is None and isinstance(operation, migrations.RunSQL):
            text = str(operation.sql)
        if isinstance(text, str):
            used |= sql_versions_used(text)
    return used


class AutodetectorMixin:
    """Makes ``makemigrations`` write the dependency on pgpubsub's SQL into new migrations."""

    def _detect_changes(self, *args: Any, **kwargs: Any) -> dict[str, list[Any]]:
        changes: dict[str, list[Any]] = super()._detect_changes(*args, **kwargs)  # type: ignore[misc]
        for app_label, app_migrations in changes.items():
            if app_label == APP_LABEL:
                continue
            for migration in app_migrations:
                required = required_migration(_operations_versions(migration.operations))
                if required is not None and required not in migration.dependencies:
                    migration.dependencies.append(required)
        return changes


def install_autodetector() -> None:
    """Mix :class:`AutodetectorMixin` into ``makemigrations``'s autodetector (idempotent).

    django-pgtrigger replaces the same class in its ``ready()``; either may
    run first, and each wraps what it finds, so both apply.
    """
    from django.core.management.commands import makemigrations, migrate

    modules: list[Any] = [makemigrations, migrate]
    current = modules[0].MigrationAutodetector
    if issubclass(current, AutodetectorMixin):
        return
    patched = type("MigrationAutodetector", (AutodetectorMixin, current), {})
    # migrate uses the autodetector only to say whether changes lack a
    # migration, but Django 5.2 checks that both commands use the same one.
    for module in modules:
        module.MigrationAutodetector = patched
        if hasattr(module.Command, "autodetector"):  # Django >= 5.2
            module.Command.autodetector = patched


@dataclasses.dataclass(frozen=True)
class MigrationFile:
    """A migration module of an installed app, as read from its source."""

    app_label: str
    name: str
    #: Its ``migrations`` package, e.g. ``"shop.migrations"``.
    package: str
    path: str | None
    #: The versions of pgpubsub's SQL it uses; ``None`` when its source cannot be read.
    versions: frozenset[int] | None


def _string_constants(source: str) -> Iterator[str]:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def _versions_in_source(path: str, source: str) -> frozenset[int]:
    stat = os.stat(path)
    key = (path, stat.st_mtime_ns, stat.st_size)
    found = _scanned.get(key)
    if found is None:
        found = frozenset()
        if "pgpubsub_" in source:
            found = frozenset(
                version for text in _string_constants(source) for version in sql_versions_used(text)
            )
        _scanned[key] = found
    return found


def app_migration_files() -> Iterator[MigrationFile]:
    """Every migration module of the installed apps but pgpubsub, read without importing it."""
    from django.db.migrations.loader import MigrationLoader

    for config in apps.get_app_configs():
        if config.label == APP_LABEL:
            continue
        package, _explicit = MigrationLoader.migrations_module(config.label)
        if package is None:
            continue
        try:
            module = importlib.import_module(package)
        except ImportError:  # no migrations: nothing to order
            continue
        if not isinstance(getattr(module, "__path__", None), list):
            continue
        for _finder, name, is_package in pkgutil.iter_modules(module.__path__):
            if is_package or name[0] in "_~":
                continue
            versions: frozenset[int] | None = None
            path = None
            with contextlib.suppress(Exception):  # never break Django's own loading
                spec = importlib.util.find_spec(f"{package}.{name}")
                if spec is not None and spec.loader is not None and spec.origin:
                    path = spec.origin
                    source = spec.loader.get_source(spec.name)  # type: ignore[attr-defined]
                    if source is not None:
                        versions = _versions_in_source(path, source)
            yield MigrationFile(config.label, name, package, path, versions)


class InstallsSQL(migrations.Migration):
    """A pgpubsub migration that installs a version of its SQL (see :data:`SQL_MIGRATIONS`).

    It runs before every app migration that uses that version, whether or
    not the app migration declares the dependency.
    """

    def __init__(self, name: str, app_label: str) -> None:
        super().__init__(name, app_label)
        if not _ordering or name not in SQL_MIGRATIONS.values():
            return
        this = (app_label, name)
        self.run_before = [  # type: ignore[misc]  # Django sets it per instance too
            *self.run_before,
            *(
                (found.app_label, found.name)
                for found in app_migration_files()
                if found.versions and required_migration(found.versions) == this
            ),
        ]


@contextlib.contextmanager
def declared_order_only() -> Iterator[None]:
    """Build migration graphs from the dependencies the files declare (no ``run_before``)."""
    global _ordering
    previous, _ordering = _ordering, False
    try:
        yield
    finally:
        _ordering = previous


@dataclasses.dataclass(frozen=True)
class MissingDependency:
    """An app migration that uses pgpubsub's SQL without depending on its installer."""

    migration: tuple[str, str]
    required: tuple[str, str]
    versions: frozenset[int]
    path: str | None
    #: Whether :class:`InstallsSQL` orders it (its source could be read).
    ordered: bool


def missing_dependencies() -> list[MissingDependency]:
    """The app migrations whose declared dependencies do not lead to the SQL they use."""
    from django.db.migrations.loader import MigrationLoader

    files = {(found.app_label, found.name): found for found in app_migration_files()}
    with declared_order_only():
        loader = MigrationLoader(None, ignore_no_migrations=True)
    found: list[MissingDependency] = []
    for key, migration in sorted(loader.disk_migrations.items()):
        if key[0] == APP_LABEL or key not in loader.graph.nodes:
            continue
        scanned = files.get(key)
        readable = scanned is not None and scanned.versions is not None
        versions = (
            scanned.versions
            if scanned is not None and scanned.versions is not None
            else frozenset(_operations_versions(migration.operations))
        )
        required = required_migration(versions)
        if required is None or required not in loader.graph.nodes:
            continue
        if required in loader.graph.forwards_plan(key):
            continue
        found.append(
            MissingDependency(
                migration=key,
                required=required,
                versions=versions,
                path=scanned.path if scanned else None,
                ordered=readable,
            )
        )
    return found
