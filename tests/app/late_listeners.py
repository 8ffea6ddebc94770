"""Listeners in a module that no listeners.py imports: imported late by a test."""

from __future__ import annotations

import pgpubsub

from .channels import Greeting


@pgpubsub.listener(Greeting)
def greet_late(message: str, count: int):
    pass
