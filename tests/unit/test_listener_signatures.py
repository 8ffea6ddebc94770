"""A listener that cannot take its channel's arguments fails the system checks (pgpubsub.E001)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from pgpubsub.registry import register_listener, registry
from tests.app.channels import AuthorChannel, Greeting
from tests.conftest import MANAGE


@pytest.fixture
def registered() -> Iterator[Callable[..., None]]:
    """Register listeners for one test, and unregister them afterwards."""
    added: list[tuple[type, Any]] = []

    def register(channel: type, callback: Callable[..., Any], **kwargs: Any) -> None:
        added.append((channel, register_listener(channel, callback, triggers=None, **kwargs)))

    yield register
    for channel, listener in added:
        registry[channel].remove(listener)


def check_errors() -> str:
    with pytest.raises(SystemCheckError) as info:
        call_command("check", "--tag", "pgpubsub")
    return str(info.value)


def test_a_trigger_listener_missing_old_is_an_error_showing_the_signature(registered):
    def bad(new):
        pass

    registered(AuthorChannel, bad)
    report = check_errors()
    assert (
        "tests.unit.test_listener_signatures.test_a_trigger_listener_missing_old_is_an_error_"
        "showing_the_signature.<locals>.bad: (pgpubsub.E001) bad(new) cannot take the events of "
        "tests.app.channels.AuthorChannel: got an unexpected keyword argument 'old'"
    ) in report
    assert (
        "HINT: A listener of tests.app.channels.AuthorChannel is called with the keyword "
        "arguments old and new: declare it as bad(old, new) or bad(old, new, context); "
        "**kwargs is accepted too."
    ) in report


def test_an_app_listener_must_take_the_channel_fields(registered):
    def greet_badly(message, colour):
        pass

    registered(Greeting, greet_badly)
    report = check_errors()
    assert "greet_badly(message, colour) cannot take the events of" in report
    assert "declare it as greet_badly(message, count) or greet_badly(message, count, context)" in (
        report
    )


def test_accepted_signatures_pass(registered):
    def with_context(old, new, context):
        pass

    def with_kwargs(**kwargs):
        pass

    def with_defaults(old, new, extra=None):
        pass

    def greet_kwargs(message, **rest):
        pass

    for callback in (with_context, with_kwargs, with_defaults):
        registered(AuthorChannel, callback)
    registered(Greeting, greet_kwargs)
    call_command("check", "--tag", "pgpubsub")


def test_pass_context_to_listeners_makes_context_compulsory(registered, settings):
    def no_context(old, new):
        pass

    registered(AuthorChannel, no_context)
    call_command("check", "--tag", "pgpubsub")
    settings.PGPUBSUB_PASS_CONTEXT_TO_LISTENERS = True
    report = check_errors()
    assert "got an unexpected keyword argument 'context'" in report
    assert (
        "old and new and context (PGPUBSUB_PASS_CONTEXT_TO_LISTENERS is on): declare it as "
        "no_context(old, new, context)"
    ) in report


def test_check_and_listen_refuse_a_bad_listener_in_listeners_py():
    """The case of the issue: ``def bad(new)`` on a post_insert_listener in listeners.py."""
    env = {**os.environ, "PGPUBSUB_TEST_BAD_SIGNATURE": "1"}
    for command in (["check"], ["listen", "--worker"]):
        done = subprocess.run(
            [sys.executable, str(MANAGE), *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert "SystemCheckError" in done.stderr
        assert (
            "tests.app.listeners.bad_signature: (pgpubsub.E001) bad_signature(new) cannot take "
            "the events of tests.app.channels.AuthorChannel"
        ) in done.stderr
        assert "ready, listening" not in done.stderr


def test_a_listener_imported_after_app_loading_warns():
    """Listeners outside listeners.py: a module of an app imported after app loading (by
    a view, say) registers its listeners where the worker may never see them."""
    import importlib

    from pgpubsub.exceptions import LateListenerWarning

    assert "tests.app.late_listeners" not in sys.modules
    try:
        with pytest.warns(LateListenerWarning) as caught:
            importlib.import_module("tests.app.late_listeners")
        [warning] = caught
        assert str(warning.message).startswith(
            "listener tests.app.late_listeners.greet_late was registered after Django's app "
            "loading, when tests.app.late_listeners was imported"
        )
        assert "Declare it in tests.app.listeners, or import its module from there" in str(
            warning.message
        )
        assert warning.filename.endswith("late_listeners.py")  # points at the decorator
    finally:
        sys.modules.pop("tests.app.late_listeners", None)
        late = "tests.app.late_listeners.greet_late"
        registry[Greeting][:] = [lst for lst in registry[Greeting] if lst.name != late]
