from dataclasses import dataclass
from datetime import timedelta

from pgpubsub import Channel, TriggerChannel

from .models import Author, Post


@dataclass
class AuthorChannel(TriggerChannel):
    """Every change to an author, delivered to whichever worker is listening.

    Its events are also kept for a day, so the live authors page
    (``make live``) can resume after a disconnect without losing any.
    """

    model = Author
    retention = timedelta(hours=24)


@dataclass
class PostChannel(TriggerChannel):
    """New posts, stored durably and processed exactly once."""

    model = Post
    lock_notifications = True


@dataclass
class PostReads(Channel):
    """An app-level event: somebody read a post."""

    post_id: int
    reader: str
