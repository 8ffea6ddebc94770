"""pgpubsub.sql.template() in a checkout (and an editable install, which reads the checkout).

tests/packaging covers an installed wheel, where the templates sit inside
the package.
"""

from __future__ import annotations

import pytest

from pgpubsub.sql import TEMPLATE_DIRS, template
from tests.conftest import REPO


def test_a_checkout_reads_the_templates_at_the_top_of_the_repository():
    assert not (REPO / "pgpubsub" / "migrations_templates").exists()
    expected = (REPO / "migrations_templates" / "pgpubsub_v1.sql").read_text(encoding="utf-8")
    assert template("pgpubsub_v1") == expected


def test_a_missing_template_names_it_and_where_it_was_looked_for():
    with pytest.raises(FileNotFoundError) as raised:
        template("pgpubsub_v99")
    message = str(raised.value)
    assert message.startswith("SQL template 'pgpubsub_v99' not found: no pgpubsub_v99.sql in ")
    assert all(str(directory) in message for directory in TEMPLATE_DIRS)
