"""One store query, run by both connectors against the real database."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from django.db import DataError, transaction

from pgpubsub import store
from pgpubsub.connector import AsyncConnector, Query, SyncConnector
from pgpubsub.models import Notification
from tests.conftest import db_url

pytestmark = pytest.mark.django_db(transaction=True)

CHANNEL = "pgpubsub_connector_test"


async def claim_async(query):
    conn = await psycopg.AsyncConnection.connect(db_url())
    try:
        connector = AsyncConnector(conn)
        assert not connector.is_lost()
        async with connector.transaction():
            return await connector.run(query)
    finally:
        await conn.close()


def test_a_claim_runs_the_same_on_django_and_on_an_async_connection():
    ids = [
        Notification.objects.create(channel=CHANNEL, payload={"kwargs": {"n": n}}).pk
        for n in range(3)
    ]
    Notification.objects.create(channel="pgpubsub_another", payload={})
    # Built once, run by both: the query itself does no I/O.
    query = store.claim(ids[0], [CHANNEL], 10)

    connector = SyncConnector("default")
    with connector.transaction():
        claimed_sync = connector.run(query)
    claimed_async = asyncio.run(claim_async(query))

    assert [row.id for row in claimed_sync] == ids[1:]
    assert [row[:4] for row in claimed_async] == [row[:4] for row in claimed_sync]
    first = claimed_async[0]
    assert isinstance(first, store.ClaimedNotification)
    assert (first.channel, first.payload, first.attempts) == (CHANNEL, '{"kwargs": {"n": 1}}', 0)
    assert first.created_at.timestamp() == claimed_sync[0].created_at.timestamp()


def test_the_async_connector_says_when_its_connection_is_lost():
    async def check() -> None:
        conn = await psycopg.AsyncConnection.connect(db_url())
        connector = AsyncConnector(conn)
        await conn.close()
        assert connector.is_lost()

    asyncio.run(check())


def test_a_failed_statement_leaves_the_transaction_aborted():
    connector = SyncConnector("default")
    with transaction.atomic():
        assert not connector.transaction_aborted()
        with pytest.raises(DataError, match="division by zero"):
            connector.run(Query("SELECT 1 / 0"))
        assert connector.transaction_aborted()
        transaction.set_rollback(True)
