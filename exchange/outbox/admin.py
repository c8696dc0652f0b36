"""Back office: the outbox (read-only, with each event's status) and requeueing FAILED events.

An event's status is derived, not stored: PUBLISHED once the relay's cursor
passed its transaction, PENDING before, or the state the relay set it aside
with (RETRY, WAITING, FAILED). See exchange/outbox/relay.py.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import BooleanField, CharField
from django.db.models.expressions import RawSQL

from exchange.core.admin import ReadOnlyAdmin
from exchange.outbox.models import OutboxCursor, OutboxEvent
from exchange.outbox.services import outbox_requeue

_CURSOR = f"(SELECT {{column}} FROM {OutboxCursor._meta.db_table} WHERE id = 1)"

STATUS_SQL = f"""
    CASE
        WHEN delivery IS NOT NULL THEN delivery
        WHEN pg_visible_in_snapshot(txid, {_CURSOR.format(column="published_snapshot")}) THEN 'PUBLISHED'
        WHEN pg_visible_in_snapshot(txid, {_CURSOR.format(column="epoch_snapshot")})
             AND id <= {_CURSOR.format(column="epoch_after_id")} THEN 'PUBLISHED'
        ELSE 'PENDING'
    END
"""

STATUSES = ("PENDING", "PUBLISHED", "RETRY", "WAITING", "FAILED")


class StatusFilter(admin.SimpleListFilter):
    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [(status, status.capitalize()) for status in STATUSES]

    def queryset(self, request, queryset):
        status = self.value()
        if status in ("RETRY", "WAITING", "FAILED"):
            return queryset.filter(delivery=status)
        if status == "PENDING":
            # Through the txid index: only transactions from the cursor's xmin on can be pending
            # (a literal bound, so the planner sees how few rows that is).
            xmin = OutboxCursor.objects.filter(id=1).values_list(
                RawSQL("pg_snapshot_xmin(published_snapshot)::text", []), flat=True).first() or "2"
            horizon = RawSQL("txid >= %s::xid8", [xmin], output_field=BooleanField())
            return queryset.filter(horizon, delivery__isnull=True, status="PENDING")
        if status == "PUBLISHED":
            return queryset.filter(status="PUBLISHED")
        return queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "topic", "event_type", "key", "sequence", "status", "attempts", "next_attempt_at",
                    "created_at")
    list_filter = (StatusFilter, "topic", "event_type")
    search_fields = ("=event_id", "=key")
    ordering = ("-id",)
    show_full_result_count = False  # counting a large published history on every page is slow
    actions = ["requeue"]
    readonly_fields = [field.name for field in OutboxEvent._meta.fields] + ["status"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(status=RawSQL(STATUS_SQL, [], output_field=CharField()))

    @admin.display(description="status")  # not sortable: a sort would compute it for the whole table
    def status(self, event) -> str:
        return event.status

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
