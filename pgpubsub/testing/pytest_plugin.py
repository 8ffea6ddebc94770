"""pytest fixtures for pgpubsub (opt-in).

Enable them in a ``conftest.py`` (pytest-django needed)::

    pytest_plugins = ["pgpubsub.testing.pytest_plugin"]

``pgpubsub_capture``
    A :class:`pgpubsub.testing.Captured` begun when the test starts: what
    the test has published so far, each time the test looks at it.
``pgpubsub_deliver``
    A :class:`pgpubsub.testing.Deliverer` started when the test starts:
    call it to run the listeners of what the test has published since the
    start, or since the last call (every channel with a listener; listener
    failures are raised).

Both request pytest-django's ``db`` fixture, so a test using them has
database access; a test marked ``django_db(transaction=True)`` gets the
transactional database, and they work the same there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .capturing import Captured
    from .delivering import Deliverer

# pgpubsub.testing is imported by the fixtures, not here: this module may be
# loaded (``-p pgpubsub.testing.pytest_plugin``) before Django is set up.


@pytest.fixture
def pgpubsub_capture(db: None) -> Iterator[Captured]:
    """What the test publishes, as :func:`pgpubsub.testing.capture` records it."""
    from .capturing import capture

    captured = capture().__enter__()
    yield captured
    # The test has looked at it already; reading again could only fail on a
    # transaction the test left aborted.
    captured.finish(collect=False)


@pytest.fixture
def pgpubsub_deliver(db: None) -> Deliverer:
    """A started :func:`pgpubsub.testing.deliver`: call it to run the listeners."""
    from .delivering import deliver

    return deliver().start()
