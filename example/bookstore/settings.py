"""Settings of the pgpubsub example project; the database comes from DATABASE_URL."""

import os

from psycopg.conninfo import conninfo_to_dict

_url = os.environ.get("DATABASE_URL")
if not _url:
    raise SystemExit(
        "Set DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/postgres), "
        "or run `make demo`, which starts an embedded PostgreSQL for you."
    )
_params = conninfo_to_dict(_url)

SECRET_KEY = "pgpubsub-example-only"
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "pgtrigger",
    "pgpubsub",
    "library",
]
# The live authors page (`make live`): served by an ASGI server (uvicorn).
ROOT_URLCONF = "bookstore.urls"
ASGI_APPLICATION = "bookstore.asgi.application"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
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
