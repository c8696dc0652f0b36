"""Back-office building blocks shared by the apps' admin modules."""

from django.contrib import admin


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows that only the platform's services write (orders, trades, the journal,
    the outbox...): viewable with the view permission; nobody adds, changes or
    deletes them here."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
