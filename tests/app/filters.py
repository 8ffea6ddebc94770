"""A ListenerFilterProvider for the listener-filter tests."""

from django.db.models import Q


class LargeOrdersOnly:
    def get_filter(self) -> Q:
        return Q(payload__new__amount__gte=100)


class TicketsOnly:
    """Filters on the model named in stored trigger events, as 1.3.1 users' filters did."""

    def get_filter(self) -> Q:
        return Q(payload__app="app", payload__model="Ticket")
