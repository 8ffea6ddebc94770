"""The admin of stored notifications, through the Django test client."""

from __future__ import annotations

import pytest
from django.urls import reverse

from pgpubsub.models import Notification
from tests.app.channels import DurableGreeting, OrderChannel

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:pgpubsub_notification_changelist")


def stored(channel: type, state: str, error: str = "", **payload: object) -> Notification:
    return Notification.objects.create(
        channel=channel.listen_safe_name(),
        payload={"trigger": "t", "op": "INSERT", **payload},
        state=state,
        attempts=3 if state == Notification.DEAD else 0,
        last_error=error,
    )


@pytest.fixture
def rows() -> dict[str, Notification]:
    return {
        "dead": stored(
            OrderChannel,
            Notification.DEAD,
            "Traceback (most recent call last):\nRuntimeError: <b>boom</b> & more",
            new={"reference": "ref-dead"},
        ),
        "pending": stored(DurableGreeting, Notification.PENDING, kwargs={"message": "hello"}),
    }


def test_changelist_lists_rows_by_channel_name_and_filters(admin_client, rows):
    response = admin_client.get(CHANGELIST)
    assert response.status_code == 200
    content = response.content.decode()
    assert OrderChannel.name() in content and DurableGreeting.name() in content
    # The channel filter offers the channels present, by dotted path.
    assert f"?channel={OrderChannel.listen_safe_name()}" in content

    response = admin_client.get(CHANGELIST, {"state__exact": "dead"})
    assert list(response.context["cl"].queryset) == [rows["dead"]]
    response = admin_client.get(CHANGELIST, {"channel": DurableGreeting.listen_safe_name()})
    assert list(response.context["cl"].queryset) == [rows["pending"]]


def test_change_page_shows_payload_and_error_read_only(admin_client, rows):
    url = reverse("admin:pgpubsub_notification_change", args=[rows["dead"].pk])
    response = admin_client.get(url)
    assert response.status_code == 200
    content = response.content.decode()
    assert "ref-dead" in content
    # The error is shown escaped, not interpreted as HTML.
    assert "RuntimeError: &lt;b&gt;boom&lt;/b&gt; &amp; more" in content
    assert 'name="_save"' not in content  # read-only: nothing to save
    # Posting changes does nothing.
    admin_client.post(url, {"state": "pending", "attempts": "0"})
    rows["dead"].refresh_from_db()
    assert rows["dead"].state == Notification.DEAD


def test_notifications_cannot_be_added_by_hand(admin_client):
    assert admin_client.get(reverse("admin:pgpubsub_notification_add")).status_code == 403


def test_retry_action_makes_dead_letters_pending_again(admin_client, rows):
    response = admin_client.post(
        CHANGELIST,
        {
            "action": "retry_dead_letters",
            "_selected_action": [rows["dead"].pk, rows["pending"].pk],
        },
        follow=True,
    )
    assert response.status_code == 200
    messages = [str(message) for message in response.context["messages"]]
    assert messages == [
        "1 dead letter(s) retried. 1 selected notification(s) were not dead letters; left alone."
    ]
    rows["dead"].refresh_from_db()
    assert (rows["dead"].state, rows["dead"].attempts) == (Notification.PENDING, 0)


def test_purge_action_deletes_only_dead_letters(admin_client, rows):
    response = admin_client.post(
        CHANGELIST,
        {
            "action": "purge_dead_letters",
            "_selected_action": [rows["dead"].pk, rows["pending"].pk],
        },
        follow=True,
    )
    assert response.status_code == 200
    assert list(Notification.objects.all()) == [rows["pending"]]
    # Django's own bulk delete is not offered: it would lose pending events.
    content = admin_client.get(CHANGELIST).content.decode()
    assert "delete_selected" not in content
    assert "purge_dead_letters" in content
