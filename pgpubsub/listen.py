"""django-pgpubsub 1.3.1 compatibility: ``pgpubsub.listen.listen()``."""

from __future__ import annotations

from collections.abc import Sequence

from .channel import BaseChannel, locate_channel
from .drift import log_warnings
from .worker import Worker


def listen(
    channels: Sequence[type[BaseChannel] | str] | None = None,
    recover: bool = False,
    autorestart_on_failure: bool = True,
    start_method: str = "spawn",
) -> None:
    """Run a worker in this process until SIGTERM/SIGINT.

    ``recover``, ``autorestart_on_failure`` and ``start_method`` are accepted
    for compatibility: stored notifications are always processed at start-up,
    and the worker reconnects by itself after connection failures.
    """
    located = [locate_channel(channel) for channel in channels or []]
    Worker(located or None, on_connected=log_warnings).run()
