from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=100)

    def __str__(self) -> str:
        return self.name


class Post(models.Model):
    author = models.ForeignKey(Author, on_delete=models.CASCADE)
    title = models.CharField(max_length=200)

    def __str__(self) -> str:
        return self.title


class PostRead(models.Model):
    """Written by a listener: one row per PostReads notification."""

    post_id = models.BigIntegerField()
    reader = models.CharField(max_length=100)
