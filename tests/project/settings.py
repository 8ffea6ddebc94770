"""Django settings for pgpubsub's test project.

The database comes from ``DATABASE_URL``. ``make test`` sets it (to an
embedded PostgreSQL unless you set it yourself); running pytest directly
without it starts the embedded server from ``tools/pgserver.py``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict

BASE_DIR = Path(__file__).resolve().parent.parent
REPO = BASE_DIR.parent


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    sys.path.insert(0, str(REPO / "tools"))
    import pgserver

    url = pgserver.start()
    os.environ["DATABASE_URL"] = url
    return url


def database_from_url(url: str) -> dict[str, object]:
    """A Django DATABASES entry for a libpq URL or conninfo string."""
    params = conninfo_to_dict(url)
    entry: dict[str, object] = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.pop("dbname", "postgres"),
        "USER": params.pop("user", ""),
        "PASSWORD": params.pop("password", ""),
        "HOST": params.pop("host", ""),
        "PORT": params.pop("port", ""),
        "OPTIONS": params,
    }
    test_name = os.environ.get("PGPUBSUB_TEST_DB_NAME")
    if test_name:
        entry["TEST"] = {"NAME": test_name}
    return entry


SECRET_KEY = "pgpubsub-tests-only"
DEBUG = False
USE_TZ = os.environ.get("PGPUBSUB_TEST_USE_TZ", "1") == "1"
TIME_ZONE = "Europe/Paris"
ALLOWED_HOSTS = ["*"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.admin",
    "django.contrib.postgres",
    "pgtrigger",
    "pgpubsub",
    "tests.app",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

ROOT_URLCONF = "tests.project.urls"

DATABASES = {"default": database_from_url(_database_url())}

# Fast retries in tests; the defaults are documented in docs/settings.rst.
PGPUBSUB_RETRY_BACKOFF = float(os.environ.get("PGPUBSUB_TEST_RETRY_BACKOFF", "0.05"))
PGPUBSUB_POLL_INTERVAL = float(os.environ.get("PGPUBSUB_TEST_POLL_INTERVAL", "1.0"))
PGPUBSUB_MAX_ATTEMPTS = 3
PGPUBSUB_LISTENER_FILTER = os.environ.get("PGPUBSUB_TEST_LISTENER_FILTER") or None
PGPUBSUB_OPTIMISTIC_BATCHES = os.environ.get("PGPUBSUB_TEST_OPTIMISTIC", "1") == "1"
PGPUBSUB_PASS_CONTEXT_TO_LISTENERS = os.environ.get("PGPUBSUB_TEST_PASS_CONTEXT") == "1"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
}
