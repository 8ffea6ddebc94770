from __future__ import annotations

from django.apps import AppConfig


class BenchAppConfig(AppConfig):
    name = "benchapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # django-pgpubsub 1.3.1 does not import listeners modules by itself.
        from . import listeners  # noqa: F401
