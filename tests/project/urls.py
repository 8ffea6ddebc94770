import django
from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]

if django.VERSION >= (5, 0):
    # pgpubsub.sse needs Django 5.0 or newer (it refuses older ones when configured).
    from tests.app.streams import stream_urls

    urlpatterns += [path(route, view) for route, view in stream_urls]
