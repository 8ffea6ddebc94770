"""Sphinx configuration for the pgpubsub documentation."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from docutils.nodes import Element
    from sphinx.addnodes import pending_xref
    from sphinx.application import Sphinx
    from sphinx.environment import BuildEnvironment

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# autodoc imports pgpubsub, which imports Django models: give Django a minimal
# configuration that needs no database.  Guarded so that the rest of the
# documentation still builds when Django (or pgpubsub) cannot be imported.
try:
    import django
    from django.conf import settings

    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        settings.configure(
            INSTALLED_APPS=[
                "django.contrib.contenttypes",
                "pgtrigger",
                "pgpubsub",
            ],
            DATABASES={},
            USE_TZ=True,
        )
    django.setup()
except Exception as exc:  # pragma: no cover - diagnostic only
    print(f"docs/conf.py: Django setup failed ({exc!r}); autodoc may fail", file=sys.stderr)

project = "pgpubsub"
author = "pgpubsub contributors"
copyright = "pgpubsub contributors"

try:
    from importlib.metadata import version as _version

    release = _version("pgpubsub")
except Exception:  # pragma: no cover - not installed
    release = "0.1.0"
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

templates_path: list[str] = []
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

html_theme = "furo"
html_title = f"pgpubsub {release}"
html_static_path: list[str] = []

autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_mock_imports: list[str] = []

# The build runs with -n (nitpicky) and -W, and there is no network for
# intersphinx: references into third-party packages cannot resolve, so they are
# not reported.  References to pgpubsub's own objects still are.
nitpick_ignore_regex = [
    (r"py:.*", r"(django|psycopg|pgtrigger|msgspec|prometheus_client|_contextvars)(\..*)?"),
    (r"py:.*", r"(collections\.abc|typing|typing_extensions|types|datetime|decimal|uuid)\..*"),
    (r"py:.*", r"(enum|pathlib|logging|threading|concurrent\.futures|contextvars)\..*"),
    # Django's models module, as pgpubsub's modules import it (``from django.db import models``).
    (r"py:class", r"models\.\w+"),
    # The hub and the standard library's deque appear in signatures only.
    (r"py:class", r"(pgpubsub\.hub\.)?Hub|collections\.deque"),
    # TypeVars (conventionally single capital letters) have no page of their own.
    (r"py:class", r"pgpubsub(\.\w+)*\.[A-Z]"),
]


def _resolve_public_name(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Element
) -> Element | None:
    """Resolve ``Name`` or ``pgpubsub.module.Name`` to the public ``pgpubsub.Name``.

    Docstrings inside pgpubsub's modules refer to classes by their short or
    defining-module name, while the API page documents them where users import
    them from: the top-level package.
    """
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    if "." in target and not target.startswith("pgpubsub."):
        return None
    candidate = "pgpubsub." + target.rsplit(".", 1)[-1]
    objects = getattr(env.get_domain("py"), "objects", {})
    obj = objects.get(candidate)
    if candidate == target or obj is None:
        return None
    from sphinx.util.nodes import make_refnode

    return make_refnode(
        app.builder, node.get("refdoc", ""), obj.docname, obj.node_id, contnode, candidate
    )


def setup(app: Sphinx) -> None:
    app.connect("missing-reference", _resolve_public_name)
