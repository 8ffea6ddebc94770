"""Django settings for running django-pgpubsub 1.3.1's test suite against pgpubsub.

``tools/compat/run.py`` extracts the suite from 1.3.1's wheel into a cache
directory and points ``PGPUBSUB_COMPAT_SUITE`` at the ``pgpubsub`` folder
there, which holds nothing but ``tests/``. The suite imports itself as
``pgpubsub.tests``, a subpackage of django-pgpubsub; appending that folder
to our package's ``__path__`` makes ``pgpubsub.tests`` importable without
copying a file into the package. The settings are imported before any app,
so the path is in place when Django imports ``pgpubsub.tests``.

The rest mirrors the test settings of django-pgpubsub's repository:
``pgpubsub.tests`` installed as the app ``tests``, ``AutoField`` keys, and
no time zone support (its tests compare naive datetimes).
"""

from __future__ import annotations

import os

from psycopg.conninfo import conninfo_to_dict

import pgpubsub

pgpubsub.__path__.append(os.environ["PGPUBSUB_COMPAT_SUITE"])


def _database(url: str) -> dict[str, object]:
    params = conninfo_to_dict(url)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": params.pop("dbname", "postgres"),
        "USER": params.pop("user", ""),
        "PASSWORD": params.pop("password", ""),
        "HOST": params.pop("host", ""),
        "PORT": params.pop("port", ""),
        "OPTIONS": params,
        "TEST": {"NAME": "pgpubsub_compat"},
    }


SECRET_KEY = "pgpubsub-compat-only"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "pgtrigger",
    "pgpubsub",
    "pgpubsub.tests",
]
DATABASES = {"default": _database(os.environ["DATABASE_URL"])}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
