"""Back office: operators see API keys (never their secrets) and can revoke them."""

from django.contrib import admin, messages

from exchange.apikeys.models import ApiKey
from exchange.apikeys.services import api_key_revoke_many
from exchange.audit.services import audit_context


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "key_id", "user", "label", "permission_list", "status", "created_at", "last_used_at", "expires_at", "revoked_at",
    )
    list_filter = ("can_trade", "can_withdraw", ("revoked_at", admin.EmptyFieldListFilter), "created_at")
    search_fields = ("key_id", "label", "user__username", "user__email")
    list_select_related = ("user",)
    fields = (
        "key_id", "user", "label", "permission_list", "ip_allowlist", "status",
        "created_at", "last_used_at", "expires_at", "revoked_at",
    )
    readonly_fields = fields
    actions = ["revoke"]

    @admin.display(description="permissions")
    def permission_list(self, api_key: ApiKey) -> str:
        return ", ".join(api_key.permissions)

    def has_add_permission(self, request):
        return False  # keys are created by their owners, who alone see the secret

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: what a key did stays attributable

    def has_change_permission(self, request, obj=None):
        # Nothing is editable on a key's page; the list keeps the revoke action.
        return obj is None and super().has_change_permission(request, obj)

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke(self, request, queryset):
        count = api_key_revoke_many(api_keys=queryset, audit=audit_context(request))
        self.message_user(request, f"Revoked {count} API key(s).", messages.SUCCESS)
