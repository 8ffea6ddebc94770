"""Settings of the benchmark project, shared by both libraries.

The harness (``bench/run.py``) runs this project twice, once in each
library's virtualenv, and tells it which through the environment:

``BENCH_IMPL``
    ``ours`` (pgpubsub from this repository) or ``theirs`` (django-pgpubsub 1.3.1).
``BENCH_DB_URL``
    libpq URL or conninfo of the implementation's own database.
``BENCH_WORK_DIR``
    where the harness generates this app's migrations for the library in use,
    so the triggers measured are always the ones the library writes today.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

IMPL = os.environ.get("BENCH_IMPL", "ours")
WORK_DIR = Path(os.environ.get("BENCH_WORK_DIR", Path(__file__).resolve().parents[2] / ".work"))
if str(WORK_DIR) not in sys.path:
    sys.path.insert(0, str(WORK_DIR))

if IMPL == "theirs":
    # django-pgpubsub 1.3.1 picks psycopg 2 unless told otherwise.
    os.environ.setdefault("PGPUBSUB_USE_PSYCOPG_V3", "True")

_params = conninfo_to_dict(os.environ.get("BENCH_DB_URL", "dbname=bench_ours"))

SECRET_KEY = "pgpubsub-bench-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
# The streams of workloads 11 and 12 (benchsite/urls.py, served by uvicorn).
ROOT_URLCONF = "benchsite.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "pgtrigger",
    "pgpubsub",
    "benchapp",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _params.pop("dbname", "postgres"),
        "USER": _params.pop("user", ""),
        "PASSWORD": _params.pop("password", ""),
        "HOST": _params.pop("host", ""),
        "PORT": _params.pop("port", ""),
        "OPTIONS": _params,
    }
}

MIGRATION_MODULES = {"benchapp": f"benchapp_migrations_{IMPL}"}

# A worker serving durable channels sweeps this often for notifications it
# was not woken for (ours); the benchmark relies on wake-ups, not on sweeps.
PGPUBSUB_POLL_INTERVAL = 5.0

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"handlers": [], "level": "WARNING"},
}
