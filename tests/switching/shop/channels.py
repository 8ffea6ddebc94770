from dataclasses import dataclass

from pgpubsub import Channel, TriggerChannel

from .models import Order


@dataclass
class OrderChannel(TriggerChannel):
    model = Order
    lock_notifications = True


@dataclass
class Shipped(Channel):
    ref: str
    lock_notifications = True
