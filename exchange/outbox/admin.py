"""Back office: the outbox backlog (read-only) and requeueing FAILED events."""

from __future__ import annotations

from django.contrib import admin, messages

from exchange.core.admin import ReadOnlyAdmin
from exchange.outbox.models import OutboxEvent
from exchange.outbox.services import outbox_requeue


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "topic", "event_type", "key", "sequence", "status", "attempts", "next_attempt_at",
                    "created_at", "published_at")
    list_filter = ("status", "topic", "event_type")
    search_fields = ("=event_id", "=key")
    ordering = ("-id",)
    show_full_result_count = False  # counting a large published history on every page is slow
    actions = ["requeue"]
    readonly_fields = [field.name for field in OutboxEvent._meta.fields]

    def has_requeue_permission(self, request):
        return request.user.has_perm("exchange.requeue_outboxevent")

    @admin.action(description="Requeue the selected FAILED events", permissions=["requeue"])
    def requeue(self, request, queryset):
        count = outbox_requeue(ids=queryset.values_list("id", flat=True))
        skipped = queryset.count() - count
        self.message_user(request, f"Requeued {count} event(s).", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{skipped} selected event(s) were not FAILED and were left as they are.",
                              messages.WARNING)
