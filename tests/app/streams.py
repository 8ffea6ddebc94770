"""Browser streams of the test app (served by tests/project/urls.py)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required, permission_required
from django.contrib.auth.mixins import LoginRequiredMixin, PermissionRequiredMixin

from pgpubsub.sse import EventStreamView

from .channels import AuthorChannel, Greeting, NoteChannel, RetainedGreeting
from .models import Author, Note


class TenantNotes(EventStreamView):
    """A tenant's notes, their titles only: the tenant is in the URL."""

    channels = [NoteChannel]
    fields = ["title"]

    def get_scope(self, channel: Any) -> Any:
        return Note.objects.filter(tenant_id=self.kwargs["tenant"])


class AsyncTenantNotes(TenantNotes):
    """The same scope from an ``async def`` hook."""

    async def get_scope(self, channel: Any) -> Any:
        return Note.objects.filter(tenant_id=self.kwargs["tenant"])


class LoginNotes(LoginRequiredMixin, EventStreamView):
    channels = [NoteChannel]


class PermissionNotes(PermissionRequiredMixin, EventStreamView):
    channels = [NoteChannel]
    permission_required = "app.view_note"


class MessagesStartingWith(EventStreamView):
    """An app channel scoped by a predicate on the event."""

    channels = [RetainedGreeting]

    def get_scope(self, channel: Any) -> Any:
        prefix = self.request.GET.get("prefix", "")
        return lambda event: event.kwargs["message"].startswith(prefix)


class WrongModelScope(EventStreamView):
    channels = [NoteChannel]

    def get_scope(self, channel: Any) -> Any:
        return Author.objects.all()


stream_urls = [
    ("live/notes/", EventStreamView.as_view(channels=[NoteChannel])),
    ("live/notes/titles/", EventStreamView.as_view(channels=[NoteChannel], fields=["title"])),
    ("live/notes/fast/", EventStreamView.as_view(channels=[NoteChannel], heartbeat=0.2)),
    ("live/notes/slow-client/", EventStreamView.as_view(channels=[NoteChannel], max_queue=3)),
    ("live/tenant/<int:tenant>/notes/", TenantNotes.as_view()),
    ("live/tenant/<int:tenant>/notes/async/", AsyncTenantNotes.as_view()),
    ("live/login/notes/", LoginNotes.as_view()),
    ("live/perm/notes/", PermissionNotes.as_view()),
    (
        "live/decorated/notes/",
        login_required(EventStreamView.as_view(channels=[NoteChannel])),
    ),
    (
        "live/decorated-perm/notes/",
        permission_required("app.view_note", raise_exception=True)(
            EventStreamView.as_view(channels=[NoteChannel])
        ),
    ),
    ("live/greetings/", EventStreamView.as_view(channels=[RetainedGreeting])),
    ("live/greetings/prefix/", MessagesStartingWith.as_view()),
    ("live/broadcast-greetings/", EventStreamView.as_view(channels=[Greeting])),
    ("live/authors/", EventStreamView.as_view(channels=[AuthorChannel], fields=["name"])),
    ("live/wrong-scope/", WrongModelScope.as_view()),
]
