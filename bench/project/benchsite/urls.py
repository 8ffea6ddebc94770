"""The browser streams of workloads 11 and 12 (issue 16), served by uvicorn.

``live/`` is the stream measured: ``EventStreamView`` on the retained
``LiveChannel`` with its defaults (the primary key only, ``max_queue``
1000). ``live-slow/`` is the same stream with a queue of
``BENCH_SSE_SLOW_QUEUE`` events (default 20): the client that stops reading
uses it, so that it is cut off after seconds rather than minutes at the
measured rates. django-pgpubsub 1.3.1 has no streams: no URLs then.
"""

from __future__ import annotations

import os

from django.urls import path

try:
    from pgpubsub.sse import EventStreamView
except ImportError:  # django-pgpubsub 1.3.1
    EventStreamView = None

from benchapp import channels

urlpatterns = []
if EventStreamView is not None and hasattr(channels, "LiveChannel"):
    urlpatterns = [
        path("live/", EventStreamView.as_view(channels=[channels.LiveChannel])),
        path(
            "live-slow/",
            EventStreamView.as_view(
                channels=[channels.LiveChannel],
                max_queue=int(os.environ.get("BENCH_SSE_SLOW_QUEUE", "20")),
            ),
        ),
    ]
