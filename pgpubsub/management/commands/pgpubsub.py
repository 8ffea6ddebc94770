"""``python manage.py pgpubsub``: status, health and dead letters.

Subcommands::

    pgpubsub status [--json] [--check]
    pgpubsub health [--min-workers N] [--timeout SECONDS]
    pgpubsub deadletters list  [--channel PATH ...] [--id N ...] [--json]
    pgpubsub deadletters retry [--channel PATH ...] [--id N ...]
    pgpubsub deadletters purge [--channel PATH ...] [--id N ...] [--older-than SECONDS] [--all]

Each takes ``--database ALIAS`` (default ``PGPUBSUB_DATABASE``).
"""

from __future__ import annotations

import datetime
import json
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import OperationalError

from pgpubsub import conf, outbox, status
from pgpubsub.channel import channel_names
from pgpubsub.exceptions import PgpubsubError
from pgpubsub.probes import (
    DEFAULT_PROBE_TIMEOUT,
    connected_workers,
    probe_connection,
    probe_params,
    worker_application_name,
)


def _first_line(text: str, width: int = 200) -> str:
    """The first line of an error message, shortened to ``width``."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _exception_line(traceback: str, width: int = 80) -> str:
    """The exception line of a formatted traceback (its last line), shortened to ``width``."""
    lines = [line.strip() for line in traceback.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= width else line[: width - 1] + "…"


class Command(BaseCommand):
    help = "Operate pgpubsub: channel status, worker health, dead letters."

    def add_arguments(self, parser: CommandParser) -> None:
        subcommands = parser.add_subparsers(
            dest="subcommand", required=True, metavar="{status,health,deadletters}"
        )

        def database(sub: CommandParser) -> None:
            sub.add_argument(
                "--database",
                metavar="ALIAS",
                help="The Django database alias (default: PGPUBSUB_DATABASE, 'default').",
            )

        sub = subcommands.add_parser(
            "status",
            help="Every channel, its listeners, triggers (drift), backlog, dead letters, workers.",
        )
        sub.add_argument("--json", action="store_true", help="Print JSON instead of tables.")
        sub.add_argument(
            "--check",
            action="store_true",
            help="Exit with status 1 when a trigger is missing, outdated, disabled or orphaned.",
        )
        database(sub)

        sub = subcommands.add_parser(
            "health",
            help="Exit 0 when the database answers and enough workers are connected, else 1.",
        )
        sub.add_argument(
            "--min-workers",
            type=int,
            default=1,
            metavar="N",
            help="Worker LISTEN sessions that must be connected (default 1; 0 checks only "
            "the database).",
        )
        sub.add_argument(
            "--timeout",
            type=float,
            default=DEFAULT_PROBE_TIMEOUT,
            metavar="SECONDS",
            help=f"Connection and query timeout (default {DEFAULT_PROBE_TIMEOUT:g}).",
        )
        database(sub)

        sub = subcommands.add_parser("deadletters", help="List, retry or purge dead letters.")
        actions = sub.add_subparsers(dest="action", required=True, metavar="{list,retry,purge}")
        for name, text in (
            ("list", "List dead letters, oldest first."),
            ("retry", "Make dead letters pending again, with a fresh set of attempts."),
            ("purge", "Delete dead letters."),
        ):
            action = actions.add_parser(name, help=text)
            action.add_argument(
                "--channel",
                action="append",
                metavar="DOTTED_PATH",
                help="Only this channel (repeatable).",
            )
            action.add_argument(
                "--id",
                type=int,
                nargs="+",
                action="extend",
                dest="ids",
                metavar="N",
                help="Only these notification ids.",
            )
            if name == "list":
                action.add_argument("--json", action="store_true", help="Print JSON.")
            if name == "purge":
                action.add_argument(
                    "--older-than",
                    type=float,
                    metavar="SECONDS",
                    help="Only dead letters created more than SECONDS ago.",
                )
                action.add_argument(
                    "--all",
                    action="store_true",
                    help="Purge every dead letter of every channel (needed when no --channel, "
                    "--id or --older-than narrows the selection; asked for interactively).",
                )
            database(action)

    def handle(self, *args: Any, **options: Any) -> None:
        alias = options.get("database") or conf.database_alias()
        try:
            if options["subcommand"] == "status":
                self.status(alias, options)
            elif options["subcommand"] == "health":
                self.health(alias, options)
            else:
                self.deadletters(alias, options)
        except PgpubsubError as exc:
            raise CommandError(str(exc)) from exc

    # -- status --------------------------------------------------------------

    def status(self, alias: str, options: dict[str, Any]) -> None:
        try:
            report = status.collect(alias)
        except OperationalError as exc:
            raise CommandError(
                f"cannot read the status of database {alias!r}: {_first_line(str(exc))}"
            ) from exc
        if options["json"]:
            self.stdout.write(json.dumps(report.as_json(), indent=2))
        else:
            self.stdout.write(status.render(report), ending="")
        if options["check"] and report.problems():
            sys.exit(1)

    # -- health --------------------------------------------------------------

    def health(self, alias: str, options: dict[str, Any]) -> None:
        minimum = options["min_workers"]
        timeout = options["timeout"]
        if minimum < 0:
            raise CommandError(f"--min-workers must be >= 0, got {minimum}")
        if timeout <= 0:
            raise CommandError(f"--timeout must be > 0, got {timeout}")
        params = probe_params(alias, timeout)
        name = worker_application_name(alias)
        try:
            with probe_connection(params, timeout) as conn:
                workers = connected_workers(conn, name)
        except Exception as exc:
            self._unhealthy(f"cannot reach database {alias!r}: {_first_line(str(exc))}")
            return
        database = params.get("dbname", alias)
        if len(workers) < minimum:
            self._unhealthy(
                f"{len(workers)} worker LISTEN session(s) connected to {database!r} "
                f"(application_name {name!r}), need at least {minimum}"
            )
            return
        self.stdout.write(
            f"OK: database {database!r} reachable, {len(workers)} worker LISTEN session(s) "
            "connected"
        )

    def _unhealthy(self, message: str) -> None:
        self.stderr.write(f"UNHEALTHY: {message}")
        sys.exit(1)

    # -- dead letters --------------------------------------------------------

    def _confirm_purge_all(self, alias: str) -> bool:
        """Whether the user confirms purging every dead letter (asked only on a terminal)."""
        if not sys.stdin.isatty():
            raise CommandError(
                "purge with no --channel, --id or --older-than deletes every dead letter of "
                "every channel; add --all to do that"
            )
        count = outbox.dead_letters(using=alias).count()
        answer = input(f"Purge all {count} dead letter(s) of every channel? [y/N] ")
        return answer.strip().lower() in ("y", "yes")

    def deadletters(self, alias: str, options: dict[str, Any]) -> None:
        channels = options["channel"]
        ids = options["ids"]
        action = options["action"]
        if action == "retry":
            count = outbox.retry_dead_letters(channels, ids=ids, using=alias)
            self.stdout.write(f"Retried {count} dead letter(s).")
            return
        if action == "purge":
            older = options["older_than"]
            if older is not None and older < 0:
                raise CommandError(f"--older-than must be >= 0, got {older}")
            unfiltered = channels is None and ids is None and older is None
            if unfiltered and not options["all"] and not self._confirm_purge_all(alias):
                self.stdout.write("Nothing purged.")
                return
            count = outbox.purge_dead_letters(
                channels,
                ids=ids,
                older_than=datetime.timedelta(seconds=older) if older is not None else None,
                using=alias,
            )
            self.stdout.write(f"Purged {count} dead letter(s).")
            return
        queryset = outbox.dead_letters(channels, using=alias)
        if ids is not None:
            queryset = queryset.filter(id__in=ids)
        names = channel_names()
        rows = [
            {
                "id": row.pk,
                "channel": names.get(row.channel, row.channel),
                "attempts": row.attempts,
                "created_at": row.created_at.isoformat(),
                "error": _exception_line(row.last_error or "", 10_000),
                "traceback": row.last_error or "",
                "payload": row.payload,
            }
            for row in queryset
        ]
        if options["json"]:
            self.stdout.write(json.dumps(rows, indent=2, default=str))
            return
        if not rows:
            self.stdout.write("No dead letters.")
            return
        self.stdout.write(
            status.format_table(
                ["ID", "CHANNEL", "ATTEMPTS", "CREATED", "ERROR"],
                [
                    [
                        row["id"],
                        row["channel"],
                        row["attempts"],
                        row["created_at"][:19],
                        _exception_line(row["error"]),
                    ]
                    for row in rows
                ],
            )
        )
        self.stdout.write(f"{len(rows)} dead letter(s).")
