from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "shop"

    def ready(self) -> None:
        # django-pgpubsub 1.3.1 finds listeners only if the app imports them.
        from . import listeners  # noqa: F401
