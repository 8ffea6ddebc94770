"""Which connection failures the worker treats as configuration errors (not retried).

The messages are PostgreSQL's and libpq's own, as psycopg reports them; the
database and role cases are also run against the server in
``tests/e2e/test_startup.py``. A wrong password cannot be: the test server
trusts every local connection.
"""

from __future__ import annotations

import psycopg
import pytest

from pgpubsub.connection import configuration_error

PREFIX = 'connection failed: connection to server at "db" (10.0.0.5), port 5432 failed: '

REFUSED_FOR_SETTINGS = [
    'FATAL:  password authentication failed for user "shop"',
    'FATAL:  role "shop" does not exist',
    'FATAL:  database "shop" does not exist',
    'FATAL:  no pg_hba.conf entry for host "10.0.0.7", user "shop", database "shop", no encryption',
    'FATAL:  role "shop" is not permitted to log in',
    "fe_sendauth: no password supplied",
    'FATAL:  permission denied for database "shop"\nDETAIL:  User does not have CONNECT privilege.',
]

RETRIED = [
    "Connection refused\n\tIs the server running on that host and accepting TCP/IP connections?",
    "FATAL:  the database system is starting up",
    "FATAL:  sorry, too many clients already",
    "FATAL:  terminating connection due to administrator command",
    "timeout expired",
]


@pytest.mark.parametrize("message", REFUSED_FOR_SETTINGS)
def test_refusals_for_the_settings_are_configuration_errors(message):
    reason = configuration_error(psycopg.OperationalError(PREFIX + message))
    assert reason is not None
    assert reason.startswith('connection to server at "db"')
    assert "\n" not in reason and "  " not in reason


@pytest.mark.parametrize("message", RETRIED)
def test_other_failures_are_retried(message):
    assert configuration_error(psycopg.OperationalError(PREFIX + message)) is None
