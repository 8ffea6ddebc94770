"""Which version of pgpubsub's SQL a trigger uses, read from its compiled SQL.

This decides which app migrations are ordered after which pgpubsub
migration (``pgpubsub.sql.SQL_MIGRATIONS``), so it must find every trigger
pgpubsub compiles and none of django-pgpubsub 1.3.1's.
"""

from __future__ import annotations

import pgtrigger
import pytest

from pgpubsub.migration_order import required_migration
from pgpubsub.sql import SQL_MIGRATIONS, sql_versions_used
from tests.app.channels import AuthorChannel, OrderChannel, PostChannel


def compiled(channel: type) -> list[str]:
    model = channel.get_model()
    return [
        trigger.compile(model).install_sql
        for registered_model, trigger in pgtrigger.registered()
        if registered_model is model and getattr(trigger, "channel", None) is channel
    ]


@pytest.mark.parametrize(
    "channel",
    [AuthorChannel, OrderChannel, PostChannel],
    ids=["broadcast row and statement", "durable statement", "custom Notify"],
)
def test_every_trigger_pgpubsub_compiles_uses_version_2(channel):
    triggers = compiled(channel)
    assert triggers
    for sql in triggers:
        # A durable statement trigger also relies on version 1's column defaults.
        assert 2 in sql_versions_used(sql) <= {1, 2}
        assert required_migration(sql_versions_used(sql)) == ("pgpubsub", SQL_MIGRATIONS[2])


def test_a_trigger_of_django_pgpubsub_1_3_1_uses_none():
    # The shape of 1.3.1's triggers: built payload, INSERT ... VALUES, pg_notify.
    legacy = """
        payload := '{"app": "shop", "model": "Order"}'::jsonb;
        payload := jsonb_insert(payload, '{new}', COALESCE(to_jsonb(NEW), 'null'));
        INSERT INTO pgpubsub_notification (channel, payload)
        VALUES ('pgpubsub_1a2b3', payload)
        RETURNING id::text INTO notify_payload;
        perform pg_notify('pgpubsub_1a2b3', notify_payload);
        RETURN NEW;
    """
    assert sql_versions_used(legacy) == set()
    assert required_migration(set()) is None


def test_later_versions_map_to_their_own_migration():
    assert sql_versions_used("PERFORM pgpubsub_publish_v2('c', true, NULL, NULL, e);") == {2}
    assert sql_versions_used("SELECT pgpubsub_message_seq_v1, pgpubsub_1a2b3_after_insert") == set()
    assert required_migration({7}) is None  # a version this release does not install
