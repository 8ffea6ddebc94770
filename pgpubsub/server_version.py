"""The oldest PostgreSQL pgpubsub runs on, and the check that enforces it.

pgpubsub asks the server its version where it first talks to one: when a
worker connects (and reconnects) and when its migration installs its SQL.
An older server gets one clear error instead of a failure somewhere later.

Why 15: the test suite runs on PostgreSQL 15 (the system server in CI) and
18 (the embedded server); 13 reached its end of life in November 2025 and
Django 5.2 refuses it anyway; 14 reached its end of life in November 2026
and nothing tests it.
"""

from __future__ import annotations

from typing import Any

from . import sql
from .exceptions import UnsupportedServerError

#: The oldest supported server, as ``server_version_num`` counts (15.0).
MINIMUM_SERVER_VERSION = 150000


def describe(version_num: int) -> str:
    """``150004`` as ``"15.4"``: major and minor of a 10+ ``server_version_num``."""
    return f"{version_num // 10000}.{version_num % 10000}"


def ensure_supported(version_num: int, version: str = "") -> None:
    """Raise :class:`~pgpubsub.exceptions.UnsupportedServerError` if ``version_num`` is too old.

    ``version`` is the server's own version string, quoted in the message.
    """
    if version_num < MINIMUM_SERVER_VERSION:
        raise UnsupportedServerError(
            version or describe(version_num), str(MINIMUM_SERVER_VERSION // 10000)
        )


def check_server_version(cursor: Any) -> int:
    """Ask the server behind ``cursor`` its version; raise if pgpubsub does not support it.

    ``cursor`` is a psycopg or Django cursor. Returns ``server_version_num``.
    """
    cursor.execute(sql.SERVER_VERSION)
    row = cursor.fetchone()
    version_num, version = int(row[0]), str(row[1])
    ensure_supported(version_num, version)
    return version_num
