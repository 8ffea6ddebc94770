"""Helpers for testing code that publishes, and the listeners that receive it.

* :func:`capture` records what a block of a test published, decoded as the
  listeners receive it, for assertions such as "this save publishes X";
* :func:`deliver` runs the listeners of what a test published,
  synchronously, in the test's own thread, as a worker would run them;
* :mod:`pgpubsub.testing.pytest_plugin` (opt-in) offers both as pytest
  fixtures, ``pgpubsub_capture`` and ``pgpubsub_deliver``.

All of them work inside Django's ``TestCase``, where nothing commits, as
well as in ``TransactionTestCase``: they read the rows written since they
started, of the test's own transaction and of transactions that committed
meanwhile (``pgpubsub.testing.reading``). See :doc:`/testing`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .capturing import Captured, Published, capture
    from .delivering import Deliverer, DeliveryLoopError, deliver

# Imported on first use: delivery imports pgpubsub's models, and the pytest
# plugin, which lives in this package, may be loaded before Django is set up.
_HOMES = {
    "Captured": ".capturing",
    "Published": ".capturing",
    "capture": ".capturing",
    "Deliverer": ".delivering",
    "DeliveryLoopError": ".delivering",
    "deliver": ".delivering",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "Captured",
    "Deliverer",
    "DeliveryLoopError",
    "Published",
    "capture",
    "deliver",
]
