"""The ASGI application uvicorn serves in workloads 11 and 12."""

from __future__ import annotations

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchsite.settings")

application = get_asgi_application()

# Both servers of workloads 11 and 12 run with the collector settings that
# docs/live.rst recommends for a process holding thousands of streams: what
# was loaded at start-up is frozen out of the collections, and the youngest
# generation is collected every 50,000 allocations instead of every 700
# (BENCH_SERVER_GC=default keeps Python's defaults).
if os.environ.get("BENCH_SERVER_GC", "tuned") == "tuned":
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
