"""One stream: django-eventstream's view on the run's channel (the same for the slow client)."""

from __future__ import annotations

import django_eventstream
from django.conf import settings
from django.urls import include, path

urlpatterns = [
    path("live/", include(django_eventstream.urls), {"channels": [settings.CHANNEL]}),
    path("live-slow/", include(django_eventstream.urls), {"channels": [settings.CHANNEL]}),
]
