"""A ListenerFilterProvider for the listener-filter tests."""

from django.db.models import Q


class LargeOrdersOnly:
    def get_filter(self) -> Q:
        return Q(payload__new__amount__gte=100)
