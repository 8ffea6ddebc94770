"""Workloads 11 and 12: browser streams from one ASGI server process (issue 16).

11. **Fan-out to SSE clients.** One uvicorn process serves the stream; one
    load client process (``bench/sseclient.py``) opens CLIENTS streams on it,
    and a producer process writes RATE rows/s for SECONDS, recording each
    commit time. Every client records each event's primary key and arrival
    time; the harness counts, per client, events lost, duplicated and out of
    order, and the commit-to-client latency of every delivery. It also
    reads the server's CPU, resident memory (before the clients connect,
    once they have, and its peak) and threads from ``/proc``, the load
    client's own CPU (to show it is not the bottleneck), and the server's
    database connections from ``pg_stat_activity``.

    - **pgpubsub**: ``EventStreamView`` on the retained ``LiveChannel``
      (``bench/project/benchsite/urls.py``); the producer inserts rows.
    - **django-eventstream 5.x**, in its own virtualenv
      (``bench/.venvs/django-eventstream-5``, with the same uvicorn, uvloop
      and httptools as ours: ``SERVER_PACKAGES``), with
      Redis for cross-process delivery (``bench/esproject``); its producer
      inserts the same rows into a table with no trigger and calls
      ``send_event`` for each once the transaction has committed. Skipped,
      with the reason, when the package cannot be installed or no Redis
      answers.

    **The slow client.** A separate measurement with fewer clients and a
    higher rate adds one client that stops reading for a few seconds: the
    server has to cut it off and the client, like a browser, reconnects
    with ``Last-Event-ID`` and must get every event, in order, once.

12. **Collapse.** The same fan-out at rising rates (``bench/ramp.py``), for
    both servers, until a client misses an event or the p99 passes one
    second: the highest rate that held, and the first that did not.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ramp
from fanout import judge, produce
from harness import (
    ALL_TABLES,
    BENCH_DIR,
    LOGS,
    PROJECT,
    REPO,
    VENVS,
    WORK,
    BenchError,
    Impl,
    rss_bytes,
    run_checked,
    stop_process,
    truncate,
)
from observe import ConnectionSampler, ProcessWatch, process_stat

ES_PROJECT = BENCH_DIR / "esproject"
ES_VENV = VENVS / "django-eventstream-5"
CLIENT = BENCH_DIR / "sseclient.py"
#: The p99 past which a rate counts as collapsed (issue 16).
COLLAPSE_MS = 1000.0


#: The ASGI server of both sides, at the versions of our virtualenv: uvicorn
#: on uvloop with httptools, as deployments run it (``uvicorn[standard]``).
SERVER_PACKAGES = ("uvicorn", "uvloop", "httptools")

#: ``BENCH_UVICORN=plain`` serves on asyncio's own loop and h11 instead.
UVICORN_FLAGS = {
    "standard": ("--loop", "uvloop", "--http", "httptools"),
    "plain": ("--loop", "asyncio", "--http", "h11"),
}


def es_requirements() -> list[str]:
    """django-eventstream's virtualenv: the same uvicorn as ours, so only the library differs."""
    return [
        "django-eventstream>=5,<6",
        "Django>=5.2,<5.3",
        "redis>=5",
        *(f"{name}=={importlib.metadata.version(name)}" for name in SERVER_PACKAGES),
        "psycopg[binary]>=3.2.4",
    ]


def ensure_es_venv(say: Any) -> Path:
    """Create (once) the cached virtualenv with django-eventstream 5.x; return its python.

    Raises :class:`BenchError` saying why when it cannot be installed.
    """
    python = ES_VENV / "bin" / "python"
    stamp = ES_VENV / ".requirements"
    wanted = "\n".join(es_requirements())
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    say(f"creating {ES_VENV.relative_to(REPO)} (django-eventstream 5.x from PyPI)")
    shutil.rmtree(ES_VENV, ignore_errors=True)
    VENVS.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    try:
        subprocess.run([base, "-m", "venv", str(ES_VENV)], check=True, capture_output=True)
        pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        subprocess.run([*pip, *es_requirements()], check=True, capture_output=True, text=True)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(ES_VENV, ignore_errors=True)
        raise BenchError(
            f"could not install django-eventstream: {' '.join(map(str, exc.cmd[-3:]))} failed: "
            f"{(exc.stderr or '')[-500:]}"
        ) from exc
    stamp.write_text(wanted)
    return python


def redis_answers(host: str = "127.0.0.1", port: int = 6379) -> str | None:
    """None if a Redis server answers PING at host:port, else why not."""
    try:
        with socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        return f"no Redis server at {host}:{port} ({exc})"
    if not answer.startswith(b"+PONG"):
        return f"the server at {host}:{port} does not answer PING as Redis does ({answer[:40]!r})"
    return None


class Server:
    """How to serve and feed one library's stream."""

    def __init__(self, key: str, label: str, impl: Impl, python: Path) -> None:
        self.key = key
        self.label = label
        self.impl = impl
        self.python = python

    def env(self) -> dict[str, str]:
        env = self.impl.env()
        if self.key == "eventstream":
            env["DJANGO_SETTINGS_MODULE"] = "essite.settings"
            env["BENCH_ES_CHANNEL"] = f"pgpubsub-bench-{os.getpid()}"
        return env

    def command(self, port: int) -> list[str]:
        app, app_dir = (
            ("essite.asgi:application", ES_PROJECT)
            if self.key == "eventstream"
            else ("benchsite.asgi:application", PROJECT)
        )
        return [
            str(self.python),
            *("-m", "uvicorn", app, "--app-dir", str(app_dir)),
            *("--host", "127.0.0.1", "--port", str(port), "--lifespan", "off"),
            *("--log-level", "warning", "--no-access-log", "--backlog", "4096"),
            *("--timeout-graceful-shutdown", "1"),
            *UVICORN_FLAGS[os.environ.get("BENCH_UVICORN", "standard")],
        ]

    def produce(self, rate: float, seconds: float) -> dict[str, Any]:
        if self.key == "eventstream":
            out = run_checked(
                [
                    str(self.python),
                    str(ES_PROJECT / "esproduce.py"),
                    *("--rate", str(rate), "--seconds", str(seconds)),
                ],
                _EnvImpl(self.impl, self.env()),
                seconds + 300,
            )
            return json.loads(out.strip().splitlines()[-1])
        return produce(self.impl, rate, seconds)


class _EnvImpl:
    """``run_checked`` wants an Impl for its environment and its error message."""

    def __init__(self, impl: Impl, env: dict[str, str]) -> None:
        self.label = impl.label
        self._env = env

    def env(self) -> dict[str, str]:
        return self._env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(server: Server) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A uvicorn process serving ``server``'s stream; (process, port) once it accepts."""
    port = _free_port()
    LOGS.mkdir(parents=True, exist_ok=True)
    with open(LOGS / f"{server.key}-uvicorn.log", "a") as log:
        log.write(f"\n=== {time.strftime('%H:%M:%S')} port {port}\n")
        log.flush()
        proc = subprocess.Popen(
            server.command(port),
            env=server.env(),
            cwd=PROJECT,
            stdout=log,
            stderr=log,
            text=True,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise BenchError(
                    f"{server.label}: uvicorn exited ({proc.returncode}); "
                    f"see {LOGS.relative_to(REPO)}/{server.key}-uvicorn.log"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{server.label}: uvicorn did not accept connections in 60 s")
            time.sleep(0.1)
        yield proc, port
    finally:
        stop_process(proc, grace=5)


def _line(proc: subprocess.Popen[str], expected: str, timeout: float, what: str) -> None:
    import select

    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline().strip() if ready else ""
    if line != expected:
        raise BenchError(
            f"{what}: the load client said {line!r} instead of {expected} "
            f"(see {LOGS.relative_to(REPO)}/sseclient.log)"
        )


def measure(
    server: Server,
    clients: int,
    rate: float,
    seconds: float,
    *,
    stall: float,
    slow_pause: float = 0.0,
) -> dict[str, Any]:
    """CLIENTS streams of one server process, RATE events/s for SECONDS; see the module doc."""
    truncate(server.impl, *ALL_TABLES)
    expect = round(rate * seconds)
    out = WORK / f"sse-{server.key}.json"
    out.unlink(missing_ok=True)
    with serving(server) as (proc, port):
        cmd = [
            sys.executable,
            str(CLIENT),
            *("--port", str(port), "--path", "/live/", "--clients", str(clients)),
            *("--expect", str(expect), "--stall", str(stall), "--out", str(out)),
        ]
        if slow_pause:
            cmd += ["--slow-path", "/live-slow/", "--slow-pause", str(slow_pause)]
        with open(LOGS / "sseclient.log", "a") as log:
            log.write(f"\n=== {time.strftime('%H:%M:%S')} {server.key} {' '.join(cmd[2:])}\n")
            log.flush()
            client = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                start_new_session=True,
            )
        try:
            _line(client, "WARM", 60, server.label)
            rss_before = rss_bytes(proc.pid)
            threads_before = process_stat(proc.pid)[1]
            assert client.stdin is not None
            client.stdin.write("go\n")
            client.stdin.flush()
            _line(client, "READY", 300, server.label)
            time.sleep(0.5)  # let the last requests settle into their streams
            rss_connected = rss_bytes(proc.pid)
            server_watch = ProcessWatch(proc.pid).start()
            client_watch = ProcessWatch(client.pid).start()
            with ConnectionSampler(server.impl) as connections:
                produced = server.produce(rate, seconds)
                client_watch.stop()
                server_watch.stop()
                client.wait(timeout=stall + 600)
        finally:
            stop_process(client)
    if not out.exists():
        raise BenchError(f"{server.label}: the load client wrote no results")
    dump = json.loads(out.read_text())
    out.unlink()
    streams = dump["clients"]
    result = judge(produced["commits"], [(c["pks"], c["ts"]) for c in streams])
    extra_kb = (max(rss_connected, server_watch.rss_peak) - rss_before) / 1024
    result.update(
        clients=clients,
        rate=rate,
        rate_achieved=produced["rate_achieved"],
        cut_off=sum(c["cut_off"] for c in streams),
        clients_cut_off=sum(1 for c in streams if c["cut_off"]),
        server_cpu_pct=server_watch.cpu_pct,
        server_rss_before_mb=rss_before / 2**20,
        server_rss_connected_mb=rss_connected / 2**20,
        server_rss_peak_mb=server_watch.rss_peak / 2**20,
        server_kb_per_client=extra_kb / clients,
        server_threads_before=threads_before,
        server_threads=server_watch.threads_peak,
        client_cpu_pct=client_watch.cpu_pct,
        producer_cpu_pct=100 * produced["cpu_s"] / seconds,
        open_s=dump["open_s"],
        **connections.summary(),
    )
    slow = dump.get("slow")
    if slow is not None:
        verdict = judge(produced["commits"], [(slow["pks"], slow["ts"])])
        result["slow"] = {
            "cut_off": slow["cut_off"],
            "reconnects": slow["reconnects"],
            "lost": verdict["lost"],
            "duplicated": verdict["duplicated"],
            "out_of_order": verdict["out_of_order"],
            "received": len(slow["pks"]),
        }
    return result


def fan_out(server: Server, cfg: Any) -> dict[str, Any]:
    """Workload 11 at the issue's size."""
    return measure(server, cfg.sse_clients, cfg.sse_rate, cfg.sse_seconds, stall=cfg.sse_stall)


def slow_client(server: Server, cfg: Any) -> dict[str, Any]:
    """Workload 11: a client that stops reading, among SSE_SLOW_CLIENTS that read."""
    result = measure(
        server,
        cfg.sse_slow_clients,
        cfg.sse_slow_rate,
        cfg.sse_slow_seconds,
        stall=cfg.sse_stall,
        slow_pause=cfg.sse_slow_pause,
    )
    slow = result.pop("slow")
    # The verdict is the slow client's; the others' figures stay beside it.
    return {
        **{
            f"others_{k}": v
            for k, v in result.items()
            if k in ("lost", "duplicated", "out_of_order", "p99_ms", "cut_off")
        },
        **slow,
        # Cut off and resumed with nothing lost: never a silent drop.
        "resumed_whole": bool(slow["cut_off"]) and not slow["lost"] and not slow["duplicated"],
    }


def collapse(server: Server, cfg: Any, tick: Any = None) -> dict[str, Any]:
    """Workload 12: the highest rate with nothing lost and p99 within 1 s; the first without."""
    done = 0

    def step(rate: float) -> dict[str, Any]:
        nonlocal done
        result = measure(server, cfg.sse_clients, rate, cfg.sse_ramp_seconds, stall=cfg.sse_stall)
        done += 1
        if tick is not None:
            tick(done, 0)
        result["lost"] += result["duplicated"] + result["out_of_order"] + result["unexpected"]
        return result

    held, steps = ramp.search(
        step,
        start=cfg.sse_rate,
        bound_ms=COLLAPSE_MS,
        ceiling=cfg.sse_ramp_top,
        refine=cfg.sse_ramp_refine,
    )
    failed = [s.rate for s in steps if not s.passed]
    return {
        "rate": held,
        "collapse_rate": min(failed) if failed else None,
        "steps": ramp.as_dicts(steps),
    }


__all__ = [
    "Server",
    "collapse",
    "ensure_es_venv",
    "fan_out",
    "measure",
    "redis_answers",
    "slow_client",
]
