"""Django admin for stored (durable) notifications.

Lists the rows of the outbox with their channel (by dotted path), state and
attempts; filters by channel and state; shows each notification's payload
and last error read-only; and offers two actions on the selected rows:
retry dead letters and purge dead letters (through :mod:`pgpubsub.outbox`,
so workers are woken for the retried ones). Notifications cannot be added
or edited by hand: they are written by triggers and ``notify()``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from . import outbox
from .channel import channel_names
from .models import Notification

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Notification]
else:  # ModelAdmin is generic only in django-stubs
    _ModelAdmin = admin.ModelAdmin


def _channel_label(db_name: str) -> str:
    return channel_names().get(db_name, db_name)


class ChannelFilter(admin.SimpleListFilter):
    """Filter by channel, named by dotted path, listing the channels that have rows."""

    title = "channel"
    parameter_name = "channel"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        present = Notification.objects.values_list("channel", flat=True).distinct().order_by()
        names = channel_names()
        return sorted(((name, names.get(name, name)) for name in present), key=lambda x: x[1])

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(channel=value) if value else queryset


@admin.register(Notification)
class NotificationAdmin(_ModelAdmin):
    list_display = ("id", "channel_name", "state", "attempts", "created_at", "available_at")
    list_filter = (ChannelFilter, "state")
    list_per_page = 100
    ordering = ("id",)
    date_hierarchy = "created_at"
    search_fields = ("=id",)
    actions = ("retry_dead_letters", "purge_dead_letters")
    fields = (
        "id",
        "channel_name",
        "channel",
        "state",
        "attempts",
        "created_at",
        "available_at",
        "payload_json",
        "error",
    )
    readonly_fields = fields

    @admin.display(description="channel", ordering="channel")
    def channel_name(self, obj: Notification) -> str:
        return _channel_label(obj.channel)

    @admin.display(description="payload")
    def payload_json(self, obj: Notification) -> str:
        text = json.dumps(obj.payload, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', text)

    @admin.display(description="last error")
    def error(self, obj: Notification) -> str:
        if not obj.last_error:
            return "-"
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', obj.last_error)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The change form is read-only; the changelist actions (which need
        # "change") stay available to those who hold the permission.
        return obj is None and super().has_change_permission(request, obj)

    @admin.action(description="Retry selected dead letters", permissions=["change"])
    def retry_dead_letters(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        ids = list(queryset.values_list("id", flat=True))
        count = outbox.retry_dead_letters(ids=ids, using=queryset.db)
        self._report(request, count, len(ids), "retried")

    @admin.action(description="Purge selected dead letters", permissions=["delete"])
    def purge_dead_letters(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        ids = list(queryset.values_list("id", flat=True))
        count = outbox.purge_dead_letters(ids=ids, using=queryset.db)
        self._report(request, count, len(ids), "purged")

    def _report(self, request: HttpRequest, count: int, selected: int, verb: str) -> None:
        skipped = selected - count
        message = f"{count} dead letter(s) {verb}."
        if skipped:
            message += f" {skipped} selected notification(s) were not dead letters; left alone."
        self.message_user(request, message, messages.SUCCESS if count else messages.WARNING)

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # Django 6.1 says where the actions are shown (action_location) and
        # deprecates overrides without it; older releases pass only request.
        where = {} if action_location is None else {"action_location": action_location}
        actions = super().get_actions(request, **where)
        # Deleting a pending notification loses an event: only dead letters
        # may be removed, through the purge action.
        actions.pop("delete_selected", None)
        return actions

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.state != Notification.DEAD:
            return False
        return super().has_delete_permission(request, obj)
