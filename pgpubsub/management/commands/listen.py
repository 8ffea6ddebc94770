"""``python manage.py listen``: run pgpubsub workers."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from pgpubsub import conf
from pgpubsub import logs
from pgpubsub.channel import listeners_for, locate_channel
from pgpubsub.exceptions import PgpubsubError
from pgpubsub.supervisor import Supervisor
from pgpubsub.worker import Worker

DEFAULT_LOGFORMAT = "%(asctime)s %(levelname).4s %(process)d %(message)s"
LOGLEVELS = ("debug", "info", "warning", "error", "critical")


class Command(BaseCommand):
    help = (
        "Listen for notifications on pgpubsub channels and dispatch them to their listeners. "
        "Runs one worker in the foreground, or a supervisor with --processes N."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--channels",
            nargs="+",
            metavar="DOTTED_PATH",
            help="Channels to listen to (default: every channel with a listener).",
        )
        parser.add_argument(
            "--processes",
            type=int,
            default=1,
            help="Run a supervisor with this many worker processes (default 1: one worker "
            "in the foreground).",
        )
        parser.add_argument(
            "--worker",
            action="store_true",
            help="Run one worker in the foreground (for orchestrators that supervise it).",
        )
        parser.add_argument(
            "--recover",
            action="store_true",
            help="Process stored notifications at start-up. Always done; kept for compatibility.",
        )
        parser.add_argument(
            "--worker-start-method",
            choices=("spawn", "fork"),
            default="spawn",
            help="Accepted for compatibility; workers are always started as fresh processes.",
        )
        parser.add_argument(
            "--no-restart-on-failure",
            action="store_true",
            help="With --processes: do not replace a worker that exits.",
        )
        parser.add_argument(
            "--loglevel",
            default="info",
            type=str.lower,
            choices=LOGLEVELS,
            help="Logging level (default: info).",
        )
        parser.add_argument(
            "--logformat",
            default=DEFAULT_LOGFORMAT,
            help="A logging format string, or 'json' for one JSON object per line.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        logs.configure(options["loglevel"], options["logformat"])
        processes = options["processes"]
        if processes < 1:
            raise CommandError(f"--processes must be at least 1, got {processes}")
        if options["worker"] and processes > 1:
            raise CommandError(
                f"--worker runs a single worker; it cannot be combined with --processes {processes}"
            )
        try:
            channels = [locate_channel(path) for path in options["channels"] or []]
        except PgpubsubError as exc:
            raise CommandError(str(exc)) from exc
        for channel in channels:
            if not listeners_for(channel):
                raise CommandError(
                    f"{channel.name()} has no listeners; register one with a pgpubsub listener "
                    "decorator in a listeners.py of an installed app"
                )
        if options["worker"] or processes == 1:
            try:
                Worker(channels or None).run()
            except PgpubsubError as exc:
                raise CommandError(str(exc)) from exc
            return
        code = Supervisor(
            self._worker_command(options),
            processes,
            restart=not options["no_restart_on_failure"],
            shutdown_timeout=conf.shutdown_timeout(),
        ).run()
        logging.getLogger("pgpubsub").info("pgpubsub: supervisor stopped")
        if code:
            sys.exit(code)

    @staticmethod
    def _worker_command(options: dict[str, Any]) -> list[str]:
        script = sys.argv[0]
        if os.path.exists(script):
            command = [sys.executable, script]
        else:  # pragma: no cover - e.g. an embedded interpreter
            command = [sys.executable, "-m", "django"]
        command += [
            "listen",
            "--worker",
            "--loglevel",
            options["loglevel"],
            "--logformat",
            options["logformat"],
        ]
        if options["channels"]:
            command += ["--channels", *options["channels"]]
        if options.get("settings"):
            command += ["--settings", options["settings"]]
        if options.get("pythonpath"):
            command += ["--pythonpath", options["pythonpath"]]
        return command
