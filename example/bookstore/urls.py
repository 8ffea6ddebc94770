"""URLs of the example project: the live authors page and its event stream."""

from django.urls import path

from library import views
from library.channels import AuthorChannel
from pgpubsub.sse import EventStreamView

urlpatterns = [
    path("", views.authors_page, name="authors"),
    path("authors.json", views.authors_json, name="authors-json"),
    # The authors' names only: a stream never sends a column nobody chose.
    path(
        "live/authors/",
        EventStreamView.as_view(channels=[AuthorChannel], fields=["name"], retry=0.5),
        name="authors-stream",
    ),
]
