"""The oldest supported PostgreSQL: the comparison, on version numbers alone."""

from __future__ import annotations

import pytest

from pgpubsub.exceptions import PgpubsubError, UnsupportedServerError
from pgpubsub.server_version import MINIMUM_SERVER_VERSION, describe, ensure_supported


def test_the_minimum_is_postgresql_15():
    assert MINIMUM_SERVER_VERSION == 150000


@pytest.mark.parametrize("version_num", [150000, 150014, 160009, 180001, 190000])
def test_supported_servers_pass(version_num):
    ensure_supported(version_num)


@pytest.mark.parametrize(
    ("version_num", "version"),
    [(149999, ""), (140019, "14.19"), (130000, "13.0"), (120022, "12.22 (Debian 12.22-1)")],
)
def test_older_servers_are_refused_with_a_message_naming_both_versions(version_num, version):
    with pytest.raises(UnsupportedServerError) as raised:
        ensure_supported(version_num, version)
    shown = version or describe(version_num)
    assert str(raised.value) == (
        f"pgpubsub needs PostgreSQL 15 or newer, but the server runs PostgreSQL {shown}; "
        "upgrade the server (the supported versions are listed in the quickstart's "
        "Requirements)"
    )
    assert raised.value.server_version == shown
    assert raised.value.minimum == "15"
    assert isinstance(raised.value, PgpubsubError)


def test_describe_reads_server_version_num():
    assert describe(150004) == "15.4"
    assert describe(180001) == "18.1"
    assert describe(149999) == "14.9999"
