from django.db import models


class Order(models.Model):
    ref = models.CharField(max_length=100)


class Delivery(models.Model):
    """What a listener received, whichever library ran it."""

    listener = models.CharField(max_length=100)
    ref = models.CharField(max_length=100)
