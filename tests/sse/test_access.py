"""Who may open a stream, and what a wrong setup says: login and permissions, WSGI, config."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import AsyncClient, Client

from pgpubsub.exceptions import StreamConfigurationError
from pgpubsub.sse import EventStreamView
from tests.app.channels import DurableGreeting, Greeting, NoteChannel, Unheard
from tests.sse.streams import open_stream, run

pytestmark = pytest.mark.django_db(transaction=True)


def _user(*permissions: str) -> User:
    user = User.objects.create_user("ann", password="pw")
    for codename in permissions:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


async def _status(path: str, client: AsyncClient | None = None) -> tuple[int, Any]:
    response = await (client or AsyncClient()).get(path)
    if response.streaming:
        await response.streaming_content.aclose()
        return response.status_code, None
    return response.status_code, response


@pytest.mark.parametrize("path", ["/live/login/notes/", "/live/decorated/notes/"])
def test_login_required_mixin_and_decorator(path):
    user = _user()

    async def scenario() -> tuple[int, Any, int]:
        anonymous, response = await _status(path)
        client = AsyncClient()
        await client.aforce_login(user)
        stream = await open_stream(path, client=client)
        await stream.close()
        return anonymous, response, stream.response.status_code

    anonymous, response, logged_in = run(scenario)
    assert anonymous == 302 and response["Location"].startswith("/accounts/login/")
    assert logged_in == 200


@pytest.mark.parametrize("path", ["/live/perm/notes/", "/live/decorated-perm/notes/"])
def test_permission_required_mixin_and_decorator(path):
    without = _user()
    with_perm = User.objects.create_user("bob", password="pw")
    with_perm.user_permissions.add(Permission.objects.get(codename="view_note"))

    async def scenario() -> tuple[int, int]:
        refused = AsyncClient()
        await refused.aforce_login(without)
        status, _ = await _status(path, refused)
        allowed = AsyncClient()
        await allowed.aforce_login(with_perm)
        stream = await open_stream(path, client=allowed)
        await stream.close()
        return status, stream.response.status_code

    assert run(scenario) == (403, 200)


def test_a_stream_served_under_wsgi_answers_a_clear_500(caplog):
    response = Client().get("/live/notes/")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/plain")
    assert b"needs an ASGI server" in response.content
    assert b"Traceback" not in response.content


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fields": ["titel"]}, r"app\.Note .* has no field 'titel'; its fields are: id, tenant"),
        ({"fields": "title"}, r"got the string 'title'; write \['title'\]"),
        ({"fields": ["tenant__name"]}, "has no field 'tenant__name'"),
        ({"fields": {Greeting: ["x"]}}, "not one of the stream's channels"),
    ],
)
def test_unknown_fields_are_refused_when_the_view_is_configured(kwargs, match):
    with pytest.raises(StreamConfigurationError, match=match):
        EventStreamView.as_view(channels=[NoteChannel], **kwargs)


def test_fields_that_are_not_columns_of_the_table_are_refused():
    from dataclasses import dataclass
    from datetime import timedelta

    from pgpubsub import TriggerChannel
    from tests.app.models import Restaurant, Tenant

    @dataclass
    class TenantStream(TriggerChannel):
        model = Tenant
        retention = timedelta(hours=1)

    @dataclass
    class RestaurantStream(TriggerChannel):
        model = Restaurant
        retention = timedelta(hours=1)

    with pytest.raises(StreamConfigurationError, match=r"app\.Tenant\.note_set|reverse relations"):
        EventStreamView.as_view(channels=[TenantStream], fields=["note"])
    with pytest.raises(StreamConfigurationError, match="multi-table inheritance"):
        EventStreamView.as_view(channels=[RestaurantStream], fields=["name"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"channels": []}, "needs channels="),
        ({"channels": NoteChannel}, "needs channels="),
        ({"channels": ["tests.app.channels.Nope"]}, "has no attribute 'Nope'"),
        ({"channels": [DurableGreeting]}, "DurableGreeting is durable"),
        ({"channels": [Unheard]}, "neither listeners nor `retention`"),
        ({"channels": [NoteChannel], "heartbeat": 0}, "heartbeat is in seconds"),
        ({"channels": [NoteChannel], "max_queue": 0}, "max_queue must be an integer"),
        ({"channels": [NoteChannel], "bogus": 1}, "bogus"),
    ],
)
def test_configurations_that_cannot_work_are_refused(kwargs, match):
    from pgpubsub import ChannelNotFound

    with pytest.raises((StreamConfigurationError, ChannelNotFound, TypeError), match=match):
        EventStreamView.as_view(**kwargs)


def test_a_hook_may_refuse_the_stream_with_permission_denied():
    from django.core.exceptions import PermissionDenied
    from django.test import AsyncRequestFactory

    class Refusing(EventStreamView):
        channels = [NoteChannel]

        def get_scope(self, channel: Any) -> Any:
            raise PermissionDenied("no")

    view = Refusing.as_view()

    async def scenario() -> int:
        request = AsyncRequestFactory().get("/x/")
        try:
            await view(request)
        except PermissionDenied:
            return 403
        return 200

    assert run(scenario) == 403


def test_gzip_middleware_which_would_stall_streams_is_refused(settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "django.middleware.gzip.GZipMiddleware"]
    with pytest.raises(StreamConfigurationError, match="GZipMiddleware is in MIDDLEWARE"):
        EventStreamView.as_view(channels=[NoteChannel])
