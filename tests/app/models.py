"""Models of the test app."""

from __future__ import annotations

from django.db import models


class Author(models.Model):
    name = models.CharField(max_length=200)
    age = models.IntegerField(null=True)
    bio = models.TextField(blank=True, default="")


class Post(models.Model):
    author = models.ForeignKey(Author, null=True, on_delete=models.SET_NULL)
    title = models.CharField(max_length=200, db_column="post_title")
    rating = models.DecimalField(max_digits=12, decimal_places=4, default=0)
    content = models.TextField(blank=True, default="")


class Order(models.Model):
    """Written to by durable-channel tests."""

    reference = models.CharField(max_length=100)
    amount = models.IntegerField(default=0)


class Delivery(models.Model):
    """One row per listener call: what the tests assert on."""

    listener = models.CharField(max_length=100)
    key = models.TextField(blank=True, default="")
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.listener}:{self.key}"
