"""Models of the test app."""

from __future__ import annotations

from django.contrib.postgres.fields import (
    ArrayField,
    DateTimeRangeField,
    HStoreField,
    IntegerRangeField,
)
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


class Everything(models.Model):
    """One column of every kind a trigger payload must carry."""

    id = models.UUIDField(primary_key=True)
    text = models.TextField(db_column="the_text", default="")
    number = models.IntegerField(null=True)
    big = models.BigIntegerField(default=0)
    flag = models.BooleanField(default=False)
    ratio = models.FloatField(null=True)
    price = models.DecimalField(max_digits=40, decimal_places=20, null=True)
    when = models.DateTimeField(null=True)
    day = models.DateField(null=True)
    at = models.TimeField(null=True)
    duration = models.DurationField(null=True)
    uid = models.UUIDField(null=True)
    data = models.JSONField(null=True)
    blob = models.BinaryField(null=True)
    tags = ArrayField(models.CharField(max_length=50), null=True)
    amounts = ArrayField(models.DecimalField(max_digits=12, decimal_places=4), null=True)
    attrs = HStoreField(null=True)
    span = IntegerRangeField(null=True)
    period = DateTimeRangeField(null=True)
    author = models.ForeignKey(Author, null=True, on_delete=models.SET_NULL, db_column="writer")


class Profile(models.Model):
    """A model whose primary key is a OneToOneField."""

    author = models.OneToOneField(Author, primary_key=True, on_delete=models.CASCADE)
    website = models.CharField(max_length=200, default="")


class Place(models.Model):
    name = models.CharField(max_length=100)


class Restaurant(Place):
    """A multi-table inheritance child."""

    serves_pizza = models.BooleanField(default=False)


class Ticket(models.Model):
    """Written to by tests of per-channel settings."""

    code = models.CharField(max_length=100)


class Tenant(models.Model):
    """A customer of a multi-tenant site: the scope of the browser stream tests."""

    name = models.CharField(max_length=100)


class Note(models.Model):
    """A tenant's row; ``secret`` must never reach a stream that did not choose it."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE)
    title = models.CharField(max_length=200)
    secret = models.CharField(max_length=200, default="")
