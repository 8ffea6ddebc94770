"""A small HTTP server for a worker's operational endpoints.

It knows nothing of health or metrics: it serves a table of routes (path ->
function returning status, content type and body) from a daemon thread.
:mod:`pgpubsub.endpoints` gives it the routes of :mod:`pgpubsub.health` and
:mod:`pgpubsub.metrics`. Only the worker process imports it, so a web
process never loads ``http.server``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .selfpipe import Waker

logger = logging.getLogger("pgpubsub")

#: What an HTTP route returns: status code, content type, body.
Response = tuple[int, str, bytes]
Route = Callable[[], Response]


class _Handler(BaseHTTPRequestHandler):
    server: OpsServer
    protocol_version = "HTTP/1.0"

    def _respond(self, with_body: bool) -> None:
        path = self.path.split("?", 1)[0]
        route = self.server.routes.get(path)
        if route is None:
            known = ", ".join(sorted(self.server.routes))
            status, ctype, body = 404, "text/plain; charset=utf-8", f"try {known}\n".encode()
        else:
            try:
                status, ctype, body = route()
            except Exception:
                logger.exception("pgpubsub: the %s endpoint failed", path)
                status, ctype, body = 500, "text/plain; charset=utf-8", b"internal error\n"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._respond(with_body=True)

    def do_HEAD(self) -> None:
        self._respond(with_body=False)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("pgpubsub: http %s " + format, self.client_address[0], *args)


class OpsServer(ThreadingHTTPServer):
    """A small HTTP server for health and metrics, run in a daemon thread.

    Its thread blocks on the listening socket and a self-pipe
    (:class:`pgpubsub.selfpipe.Waker`), with no timeout: an idle worker's
    HTTP thread never wakes up (``serve_forever`` would, twice a second).
    """

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: str, port: int, routes: Mapping[str, Route]) -> None:
        self.routes = dict(routes)
        super().__init__((addr, port), _Handler)
        # handle_request() is only called once the socket is readable.
        self.timeout = 0
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._waker = Waker()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def _serve(self) -> None:
        listening = self.fileno()
        while not self._stopping:
            if self._waker.wait([listening]) and not self._stopping:
                self.handle_request()

    def start(self) -> OpsServer:
        """Serve from a daemon thread; return the server."""
        self._thread = threading.Thread(
            target=self._serve, name=f"pgpubsub-http-{self.server_address[1]}", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wait for the thread and close the socket."""
        self._stopping = True
        self._waker.wake()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self.server_close()
        self._waker.close()
