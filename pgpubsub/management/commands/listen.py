"""``python manage.py listen``: run pgpubsub workers."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from pgpubsub import conf, drift, logs
from pgpubsub.channel import BaseChannel, locate_channel
from pgpubsub.connection import preflight
from pgpubsub.endpoints import serve_endpoints
from pgpubsub.exceptions import PgpubsubError
from pgpubsub.registry import registered_channels
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
        parser.add_argument(
            "--shutdown-timeout",
            type=float,
            metavar="SECONDS",
            help="With --processes: how long to wait for workers to finish their work after "
            "SIGTERM/SIGINT before killing them (default: PGPUBSUB_SHUTDOWN_TIMEOUT, 30).",
        )
        parser.add_argument(
            "--health-port",
            type=int,
            metavar="PORT",
            help="Serve GET /healthz (liveness) and /readyz (readiness) on this port (0: any "
            "free port, logged). With --processes N, worker i serves on PORT+i.",
        )
        parser.add_argument(
            "--health-addr",
            default="127.0.0.1",
            metavar="ADDRESS",
            help="Address of the health endpoint (default 127.0.0.1; use 0.0.0.0 for "
            "Kubernetes probes).",
        )
        parser.add_argument(
            "--metrics-port",
            type=int,
            metavar="PORT",
            help="Serve Prometheus metrics at /metrics on this port (0: any free port, logged; "
            "needs pip install 'pgpubsub-django[metrics]'). With --processes N, worker i serves on "
            "PORT+i.",
        )
        parser.add_argument(
            "--metrics-addr",
            default="127.0.0.1",
            metavar="ADDRESS",
            help="Address of the metrics endpoint (default 127.0.0.1).",
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
            given = [locate_channel(path) for path in options["channels"] or []]
        except PgpubsubError as exc:
            raise CommandError(str(exc)) from exc
        for channel in given:
            if not registered_channels([channel]):
                raise CommandError(
                    f"{channel.name()} has no listeners, nor has any of its subclasses; register "
                    "one with a pgpubsub listener decorator in a listeners.py of an installed app"
                )
        # Each channel given brings its subclasses with listeners, as in 1.3.1.
        channels = registered_channels(given) if given else []
        for flag in ("health_port", "metrics_port"):
            port = options[flag]
            if port is not None and not (port == 0 or 0 < port + processes - 1 < 65536):
                raise CommandError(
                    f"--{flag.replace('_', '-')} {port} is not a usable port"
                    + (f" for {processes} processes" if processes > 1 else "")
                    + " (1-65535, or 0 for any free port)"
                )
        shutdown_timeout = options["shutdown_timeout"]
        if shutdown_timeout is None:
            shutdown_timeout = conf.shutdown_timeout()
        elif shutdown_timeout < 0:
            raise CommandError(f"--shutdown-timeout must be >= 0, got {shutdown_timeout}")
        if options["worker"] or processes == 1:
            self._run_worker(channels, options)
            return
        # The workers would each fail on a bad database setting or a missing
        # migration, and be restarted for ever: find out once, here.
        try:
            preflight(conf.database_alias())
        except (PgpubsubError, ImproperlyConfigured) as exc:
            raise CommandError(str(exc)) from exc
        code = Supervisor(
            lambda slot: self._worker_command(options, slot),
            processes,
            restart=not options["no_restart_on_failure"],
            shutdown_timeout=shutdown_timeout,
        ).run()
        logging.getLogger("pgpubsub").info("pgpubsub: supervisor stopped")
        if code:
            sys.exit(code)

    @staticmethod
    def _run_worker(channels: list[type[BaseChannel]], options: dict[str, Any]) -> None:
        health = metrics = None
        if options["health_port"] is not None:
            health = (options["health_addr"], options["health_port"])
        if options["metrics_port"] is not None:
            metrics = (options["metrics_addr"], options["metrics_port"])
        try:
            worker = Worker(channels or None, on_connected=drift.log_warnings)
            with serve_endpoints(using=worker.using, health=health, metrics=metrics):
                worker.run()
        except (PgpubsubError, ImproperlyConfigured) as exc:
            raise CommandError(str(exc)) from exc

    @staticmethod
    def _worker_command(options: dict[str, Any], slot: int = 0) -> list[str]:
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
        for name in ("health", "metrics"):
            port = options.get(f"{name}_port")
            if port is not None:
                # Port 0 lets each worker pick a free port (it logs which).
                command += [f"--{name}-port", str(port + slot if port else 0)]
                command += [f"--{name}-addr", options[f"{name}_addr"]]
        if options.get("settings"):
            command += ["--settings", options["settings"]]
        if options.get("pythonpath"):
            command += ["--pythonpath", options["pythonpath"]]
        return command
