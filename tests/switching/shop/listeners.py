import pgpubsub

from .channels import OrderChannel, Shipped
from .models import Delivery


@pgpubsub.post_insert_listener(OrderChannel)
def order_placed(old, new):
    Delivery.objects.create(listener="order_placed", ref=new.ref)


@pgpubsub.listener(Shipped)
def shipped(ref):
    Delivery.objects.create(listener="shipped", ref=ref)
