import pgpubsub

from .channels import AuthorChannel, PostChannel, PostReads
from .models import PostRead


def say(text: str) -> None:
    print(f"[listener] {text}", flush=True)


@pgpubsub.post_insert_listener(AuthorChannel)
def author_added(old, new):
    say(f"author added: {new.name} (id {new.pk})")


@pgpubsub.post_update_listener(AuthorChannel)
def author_renamed(old, new):
    say(f"author renamed: {old.name} -> {new.name}")


@pgpubsub.pre_delete_listener(AuthorChannel)
def author_removed(old, new):
    say(f"author deleted: {old.name}")


@pgpubsub.post_insert_listener(PostChannel)
def post_published(old, new):
    say(f"post published (durable, exactly once): {new.title!r} by author {new.author_id}")


@pgpubsub.listener(PostReads)
def post_read(post_id: int, reader: str):
    PostRead.objects.create(post_id=post_id, reader=reader)
    say(f"post {post_id} read by {reader}")
