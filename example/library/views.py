"""The live authors page: rendered from the database, then kept current by an event stream."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render

import pgpubsub

from .models import Author


def _state() -> dict:
    # The checkpoint first, then the rows: whatever commits in between
    # arrives as an event (perhaps one the rows already include; the page
    # applies events idempotently), so nothing falls in the gap.
    checkpoint = pgpubsub.checkpoint()
    authors = [{"pk": a.pk, "name": a.name} for a in Author.objects.order_by("pk")]
    return {"checkpoint": checkpoint, "authors": authors}


def authors_page(request: HttpRequest) -> HttpResponse:
    return render(request, "library/authors.html", _state())


def authors_json(request: HttpRequest) -> JsonResponse:
    """What the page reloads when the stream sends ``reset``."""
    return JsonResponse(_state())
