"""Settings: defaults, and a clear error naming the setting for every bad value."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from pgpubsub import conf

NUMBERS = [
    # (setting, reader, default, zero allowed)
    ("PGPUBSUB_POLL_INTERVAL", conf.poll_interval, 5.0, False),
    ("PGPUBSUB_RETRY_BACKOFF", conf.retry_backoff, 1.0, True),
    ("PGPUBSUB_RETRY_BACKOFF_MAX", conf.retry_backoff_max, 300.0, True),
    ("PGPUBSUB_PAYLOAD_RETENTION", conf.payload_retention, 3600.0, False),
    ("PGPUBSUB_SHUTDOWN_TIMEOUT", conf.shutdown_timeout, 30.0, True),
]
INTEGERS = [
    ("PGPUBSUB_BATCH_SIZE", conf.batch_size, 500),
    ("PGPUBSUB_MAX_ATTEMPTS", conf.max_attempts, 5),
]


@pytest.mark.parametrize(("name", "reader", "default", "zero_ok"), NUMBERS)
def test_numbers(settings, name, reader, default, zero_ok):
    if hasattr(settings, name):
        delattr(settings, name)
    assert reader() == default
    with override_settings(**{name: 2}):
        assert reader() == 2.0
    with override_settings(**{name: 0}):
        if zero_ok:
            assert reader() == 0.0
        else:
            with pytest.raises(ImproperlyConfigured, match=rf"{name} must be a number > 0, got 0"):
                reader()
    for bad in (-1, "5", None, True):
        with override_settings(**{name: bad}), pytest.raises(ImproperlyConfigured, match=name):
            reader()


@pytest.mark.parametrize(("name", "reader", "default"), INTEGERS)
def test_integers(settings, name, reader, default):
    if hasattr(settings, name):
        delattr(settings, name)
    assert reader() == default
    with override_settings(**{name: 1}):
        assert reader() == 1
    for bad in (0, -3, 2.5, "10", True):
        with (
            override_settings(**{name: bad}),
            pytest.raises(ImproperlyConfigured, match=rf"{name} must be an integer >= 1"),
        ):
            reader()


def test_database_alias_must_be_in_databases():
    assert conf.database_alias() == "default"
    with (
        override_settings(PGPUBSUB_DATABASE="replica"),
        pytest.raises(ImproperlyConfigured, match=r"'replica', which is not in DATABASES"),
    ):
        conf.database_alias()


def test_listener_filter_must_be_a_dotted_path(settings):
    settings.PGPUBSUB_LISTENER_FILTER = None
    assert conf.listener_filter() is None
    with (
        override_settings(PGPUBSUB_LISTENER_FILTER=object),
        pytest.raises(ImproperlyConfigured, match="PGPUBSUB_LISTENER_FILTER must be a dotted path"),
    ):
        conf.listener_filter()
