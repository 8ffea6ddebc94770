"""pgpubsub.sse refuses Django releases that cannot tell a stream its client left."""

from __future__ import annotations

import pytest

from pgpubsub.exceptions import StreamConfigurationError
from pgpubsub.sse import EventStreamView


def test_django_older_than_5_0_is_refused_when_the_view_is_configured(monkeypatch):
    monkeypatch.setattr("django.VERSION", (4, 2, 30, "final", 0))
    monkeypatch.setattr("django.get_version", lambda: "4.2.30")
    with pytest.raises(
        StreamConfigurationError, match=r"needs Django 5\.0 or newer: Django 4\.2\.30"
    ):
        EventStreamView.as_view(channels=["tests.app.channels.NoteChannel"])
