"""The load client of workloads 11 and 12: many server-sent event streams from one process.

Standard library only, so that it costs as little as possible: each client
is an ``asyncio.Protocol`` on a raw socket that sends an HTTP/1.1 GET,
decodes the chunked response and records the primary key (``"pk":N`` in
``data:``) and the arrival time of each event. Parsing is per chunk of bytes
received, not per event: one regular expression finds every key in what
arrived, one ``time.time()`` stamps them all.

Like a browser's ``EventSource``, a client whose response ends reconnects
(after ``--retry`` seconds) with ``Last-Event-ID``, the id of the last event
it received, if the stream gave ids (pgpubsub's do; django-eventstream's
carry none without storage, so its clients resume from nothing). Every
response that ended early is counted (``cut_off``).

The *slow client* (``--slow-path``) reads a small socket buffer, stops
reading once it has its first event for ``--slow-pause`` seconds, then
reads again: the server must cut it off (end its response) rather than
buffer without bound, and it must resume from its last id with nothing lost.

Protocol on stdout: ``WARM`` once the first client (the warm-up) receives
its first bytes; the client then waits for a line on stdin before opening
the others; ``READY`` once every stream has started; then the results go
to ``--out`` as JSON and a last JSON line is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import socket
import sys
import time
from typing import Any

PK = re.compile(rb'"pk": ?(\d+)')
ID = re.compile(rb"(?m)^id: ?([^\n]*)$")


class Client(asyncio.Protocol):
    """One event stream."""

    def __init__(self, pool: Pool, path: str, slow_pause: float = 0.0) -> None:
        self.pool = pool
        self.path = path
        self.slow_pause = slow_pause
        self.pks: list[int] = []
        self.ts: list[float] = []
        self.last_id: bytes | None = None
        self.cut_off = 0
        self.reconnects = 0
        self.started = asyncio.get_running_loop().create_future()
        self.done = False
        self.status: bytes | None = None
        #: The slow client stops reading once, not on every reconnect.
        self.paused_once = False
        self._reset()

    def _reset(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.in_body = False
        self.raw = b""  # chunked body not yet decoded
        self.text = b""  # decoded event-stream text not yet split into events
        self.ended = False  # the response's last (empty) chunk arrived

    # -- connecting ---------------------------------------------------------------

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.slow_pause:
            # A small window, and small segments: on loopback (MTU 64 KiB)
            # the server's kernel would otherwise size its send buffer for
            # 64 KiB segments and hold megabytes, minutes of events, before
            # the server itself notices that this client stopped reading.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
        sock.setblocking(False)
        await loop.sock_connect(sock, (self.pool.host, self.pool.port))
        await loop.create_connection(lambda: self, sock=sock)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._reset()
        self.transport = transport
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.pool.host}:{self.pool.port}\r\n"
            "Accept: text/event-stream\r\nCache-Control: no-cache\r\n"
        ).encode()
        if self.last_id is not None:
            request += b"Last-Event-ID: " + self.last_id + b"\r\n"
        transport.write(request + b"\r\n")

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.started.done():
            self.started.set_exception(
                ConnectionError(
                    f"stream {self.path} ended before it started ({exc}): {self.head[:200]!r}"
                )
            )
            return
        if self.done or self.pool.closing:
            return
        self.cut_off += 1
        asyncio.get_running_loop().call_later(self.pool.retry, self._reconnect)

    def _reconnect(self) -> None:
        if self.done or self.pool.closing:
            return
        self.reconnects += 1
        task = asyncio.get_running_loop().create_task(self.connect())
        self.pool.tasks.add(task)
        task.add_done_callback(self.pool.tasks.discard)

    # -- reading ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self.head[:end], self.head[end + 4 :]
            self.status = head.split(b"\r\n", 1)[0]
            if b" 200 " not in self.status + b" ":
                if not self.started.done():
                    self.started.set_exception(ConnectionError(f"{self.path}: {self.status!r}"))
                assert self.transport is not None
                self.transport.close()
                return
            self.in_body = True
        self.raw += data
        decoded = self._dechunk()
        if self.ended and self.transport is not None:
            # The server ended the response (a keep-alive connection stays open).
            self.transport.close()
        if not decoded:
            return
        if not self.started.done():
            self.started.set_result(None)
        text = self.text + decoded
        end = text.rfind(b"\n\n")
        if end < 0:
            self.text = text
            return
        complete, self.text = text[: end + 2], text[end + 2 :]
        found = PK.findall(complete)
        if found:
            now = time.time()
            self.pks.extend(map(int, found))
            self.ts.extend([now] * len(found))
            if len(self.pks) >= self.pool.expect:
                self.done = True
        ids = ID.findall(complete)
        if ids:
            self.last_id = ids[-1]
        if self.slow_pause and found and not self.paused_once and self.transport is not None:
            self.paused_once = True
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(self.slow_pause, self._resume)

    def _resume(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def _dechunk(self) -> bytes:
        out = []
        raw = self.raw
        pos = 0
        while True:
            line_end = raw.find(b"\r\n", pos)
            if line_end < 0:
                break
            size = int(raw[pos:line_end].split(b";", 1)[0] or b"0", 16)
            start = line_end + 2
            if len(raw) < start + size + 2:
                break
            out.append(raw[start : start + size])
            pos = start + size + 2
            if size == 0:
                self.ended = True
                break
        self.raw = raw[pos:]
        return b"".join(out)

    def result(self) -> dict[str, Any]:
        return {
            "pks": self.pks,
            "ts": self.ts,
            "cut_off": self.cut_off,
            "reconnects": self.reconnects,
        }


class Pool:
    def __init__(self, args: argparse.Namespace) -> None:
        self.host = args.host
        self.port = args.port
        self.expect = args.expect
        self.retry = args.retry
        self.closing = False
        self.tasks: set[asyncio.Task[None]] = set()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _start(clients: list[Client], batch: int = 100) -> None:
    """Open the streams, ``batch`` at a time, and wait for each to start."""
    for first in range(0, len(clients), batch):
        group = clients[first : first + batch]
        await asyncio.gather(*(c.connect() for c in group))
        await asyncio.wait_for(asyncio.gather(*(c.started for c in group)), 60)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    pool = Pool(args)
    warm = Client(pool, args.path)
    await _start([warm])
    print("WARM", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    clients = [warm] + [Client(pool, args.path) for _ in range(args.clients - 1)]
    opened = time.monotonic()
    await _start(clients[1:])
    slow = None
    if args.slow_path:
        slow = Client(pool, args.slow_path, slow_pause=args.slow_pause)
        await _start([slow])
    print("READY", flush=True)
    ready_s = time.monotonic() - opened
    cpu0 = _cpu()
    everyone = clients + ([slow] if slow else [])
    started = last_change = time.monotonic()
    last_total = 0
    while not all(c.done for c in everyone):
        await asyncio.sleep(0.1)
        now = time.monotonic()
        total = sum(len(c.pks) for c in everyone)
        if total != last_total:
            last_total, last_change = total, now
        elif (total and now - last_change > args.stall) or now - started > args.deadline:
            break
    cpu = _cpu() - cpu0
    pool.closing = True
    for c in everyone:
        if c.transport is not None:
            c.transport.close()
    return {
        "clients": [c.result() for c in clients],
        "slow": slow.result() if slow else None,
        "cpu_s": cpu,
        "open_s": ready_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--stall", type=float, default=10.0)
    parser.add_argument("--deadline", type=float, default=600.0)
    parser.add_argument("--retry", type=float, default=0.5)
    parser.add_argument("--slow-path", default="")
    parser.add_argument("--slow-pause", type=float, default=0.0)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    result = asyncio.run(run(args))
    with open(args.out, "w") as fh:
        json.dump(result, fh)
    print(json.dumps({"out": args.out}), flush=True)


if __name__ == "__main__":
    main()
