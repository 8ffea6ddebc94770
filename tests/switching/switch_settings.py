"""Settings of a small project that runs on django-pgpubsub 1.3.1 and on pgpubsub alike.

``tests/e2e/test_switching.py`` runs it with each library's interpreter to
switch a database from 1.3.1 to pgpubsub, write to it with 1.3.1's code
meanwhile (a rolling deploy), and roll it back. It reads from the
environment:

``SWITCH_DATABASE_URL``
    the database (created and dropped by the test);
``SWITCH_WORK_DIR``
    a folder holding ``shop_migrations``, where the app's migrations are
    generated, as a user's ``makemigrations`` would write them.
"""

from __future__ import annotations

import os
import sys

from psycopg.conninfo import conninfo_to_dict

# django-pgpubsub 1.3.1 uses psycopg 2 unless told otherwise.
os.environ.setdefault("PGPUBSUB_USE_PSYCOPG_V3", "True")
sys.path.insert(0, os.environ["SWITCH_WORK_DIR"])

_params = conninfo_to_dict(os.environ["SWITCH_DATABASE_URL"])

SECRET_KEY = "pgpubsub-switching-test-only"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["django.contrib.contenttypes", "pgtrigger", "pgpubsub", "shop"]
MIGRATION_MODULES = {"shop": "shop_migrations"}
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _params.pop("dbname"),
        "USER": _params.pop("user", ""),
        "PASSWORD": _params.pop("password", ""),
        "HOST": _params.pop("host", ""),
        "PORT": _params.pop("port", ""),
        "OPTIONS": _params,
    }
}
