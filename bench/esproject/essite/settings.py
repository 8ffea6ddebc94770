"""django-eventstream 5.x serving the streams of workloads 11 and 12 (its own virtualenv).

Events cross processes through Redis, as django-eventstream's docs say a
multi-process deployment needs: the producer calls ``send_event`` and the
server's Redis listener hands the event to its clients. No storage
(``EVENTSTREAM_STORAGE_CLASS``): with it, each client holds a PostgreSQL
connection, which caps a process near a hundred clients. Without it,
streams carry no event ids and cannot resume.

``BENCH_ES_CHANNEL`` names the channel (unique per run: Redis's pub/sub is
shared by every database number of the server); ``BENCH_REDIS_HOST`` and
``BENCH_REDIS_PORT`` the Redis server (default 127.0.0.1:6379).
"""

from __future__ import annotations

import os

SECRET_KEY = "pgpubsub-bench-only"
DEBUG = False
USE_TZ = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django_eventstream"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "essite.urls"
DATABASES: dict = {}
EVENTSTREAM_REDIS = {
    "host": os.environ.get("BENCH_REDIS_HOST", "127.0.0.1"),
    "port": int(os.environ.get("BENCH_REDIS_PORT", "6379")),
}
CHANNEL = os.environ.get("BENCH_ES_CHANNEL", "pgpubsub-bench")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"handlers": [], "level": "WARNING"},
}
