"""The pgpubsub Django app."""

from __future__ import annotations

import importlib
import importlib.util

from django.apps import AppConfig, apps


class PgpubsubConfig(AppConfig):
    """Imports every installed app's ``channels`` and ``listeners`` modules at start-up
    and checks every channel class, so a bad declaration fails at start-up, not
    at the first notification."""

    name = "pgpubsub"
    verbose_name = "pgpubsub"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks, migration_order
        from .channel import TriggerChannel, all_channel_classes
        from .listeners import install_retained_triggers

        checks.register()
        migration_order.install_autodetector()

        for app_config in apps.get_app_configs():
            for module in ("channels", "listeners"):
                dotted = f"{app_config.name}.{module}"
                if importlib.util.find_spec(app_config.name) is None:
                    continue
                try:
                    spec = importlib.util.find_spec(dotted)
                except ModuleNotFoundError:
                    spec = None
                if spec is not None:
                    importlib.import_module(dotted)
        for channel in all_channel_classes():
            channel.validate()
            if issubclass(channel, TriggerChannel) and channel.retained():
                install_retained_triggers(channel)
