"""pgpubsub.sse needs Django 5.0 or newer: on older releases its tests are skipped."""

from __future__ import annotations

import django
import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if django.VERSION >= (5, 0):
        return
    skip = pytest.mark.skip(reason="pgpubsub.sse needs Django 5.0 or newer")
    for item in items:
        if "tests/sse/" in str(item.path).replace("\\", "/"):
            item.add_marker(skip)
