"""The opt-in pytest plugin: pgpubsub_capture and pgpubsub_deliver with pytest-django."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

import pgpubsub
from pgpubsub.models import Notification
from pgpubsub.testing import Captured, Deliverer
from tests.app.channels import AuthorChannel, Greeting, OrderChannel
from tests.app.models import Author, Delivery, Order
from tests.conftest import REPO


def delivered(listener: str) -> list[str]:
    return list(Delivery.objects.filter(listener=listener).values_list("key", flat=True))


@pytest.mark.django_db
def test_pgpubsub_capture_records_what_the_test_publishes(pgpubsub_capture: Captured):
    pgpubsub.notify(Greeting, message="before the look")
    assert [event.kwargs["message"] for event in pgpubsub_capture] == ["before the look"]
    author = Author.objects.create(name="ann")
    Order.objects.create(reference="ord-1")
    assert pgpubsub_capture.of(AuthorChannel, trigger="after_insert")[0].new == author
    assert pgpubsub_capture.of(OrderChannel)[0].new.reference == "ord-1"
    assert not Delivery.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_pgpubsub_capture_with_a_transactional_database(pgpubsub_capture: Captured):
    Order.objects.create(reference="committed")
    pgpubsub.notify(Greeting, message="committed")
    assert pgpubsub_capture.of(OrderChannel)[0].new.reference == "committed"
    assert pgpubsub_capture.of(Greeting)[0].kwargs == {"message": "committed", "count": 0}
    assert len(pgpubsub_capture) == 2


@pytest.mark.django_db
def test_pgpubsub_deliver_runs_the_listeners_when_called(pgpubsub_deliver: Deliverer):
    author = Author.objects.create(name="ann")
    Order.objects.create(reference="ord-1")
    assert not Delivery.objects.exists()

    assert pgpubsub_deliver() > 0

    assert delivered("post_insert") == [str(author.pk)]
    assert delivered("order_created") == ["ord-1"]
    assert not Notification.objects.exists()
    assert pgpubsub_deliver() == 0


@pytest.mark.django_db(transaction=True)
def test_pgpubsub_deliver_with_a_transactional_database(pgpubsub_deliver: Deliverer):
    pgpubsub.notify(Greeting, message="boom")
    Order.objects.create(reference="ord-1")
    with pytest.raises(ValueError, match="refuses 'boom'"):
        pgpubsub_deliver()
    assert delivered("greet_second") == ["boom"]
    assert delivered("order_created") == ["ord-1"]
    assert not Notification.objects.exists()


def fixtures_listed(tmp_path, *options: str) -> str:
    """``pytest --fixtures`` in a project of its own with pytest-django (no conftest)."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.project.settings",
        "PYTHONPATH": str(REPO),
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--fixtures", "-p", "no:cacheprovider", *options],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_plugin_is_opt_in(tmp_path):
    assert not [
        entry for entry in entry_points(group="pytest11") if entry.value.startswith("pgpubsub")
    ]
    assert "pgpubsub_capture" not in fixtures_listed(tmp_path)
    # -p loads it before pytest-django sets Django up: it must not need Django yet.
    listed = fixtures_listed(tmp_path, "-p", "pgpubsub.testing.pytest_plugin")
    assert "pgpubsub_capture" in listed
    assert "pgpubsub_deliver" in listed
