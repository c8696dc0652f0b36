"""The back office's user and role pages: Django's own, with every change audited and roles kept to superusers.

A user's edit writes ROLE_CHANGE for what decides their access (groups,
staff and superuser flags, direct permissions) and USER_UPDATE for the rest;
a role's (group's) permission edit writes ROLE_CHANGE. Passwords are never
recorded; their changes are PASSWORD_CHANGE rows (``exchange.audit.passwords``).

Least privilege (``exchange.roles``):

- Only superusers grant access: for everyone else the role fields are
  read-only, staff accounts cannot be edited, and passwords cannot be set.
- Deactivating and reactivating a user are actions with a reason
  (``user_deactivate`` also cancels all the user's open orders and closes
  their live connections); ``is_active`` is not a form field.
- "Cancel all open orders" (Support and Operators: ``orders.change_order``)
  and "Reset two-factor authentication" (a lost phone) are actions too.
- Sign-in lockouts (django-axes' records) are listed read-only; operators
  lift one with a reason.
"""

from __future__ import annotations

from axes.models import AccessAttempt
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django_otp.plugins.otp_totp.models import TOTPDevice

from exchange.accounts.lockout import login_lockouts_reset
from exchange.accounts.services import user_deactivate, user_orders_cancel, user_reactivate, user_totp_reset
from exchange.accounts.twofactor import totp_device
from exchange.accounts.usernames import username_clash
from exchange.admin_actions import reason_action
from exchange.audit import actions
from exchange.audit.admin import AuditedModelAdmin
from exchange.audit.services import changed_fields, snapshot
from exchange.core.admin import ReadOnlyAdmin

User = get_user_model()
ROLE_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")
# Written by logins, not by anyone editing the user.
_NOT_EDITS = {"last_login"}

admin.site.unregister(User)
admin.site.unregister(Group)
# django-otp's own page shows authenticator keys: devices are managed from the user (reset) and by their owner.
admin.site.unregister(TOTPDevice)


def _permission_names(permissions) -> list[str]:
    return sorted(f"{p.content_type.app_label}.{p.codename}" for p in permissions.select_related("content_type"))


class _UniqueUsername:
    """Refuses a username that equals another after Unicode normalization and case folding
    (the database's unique index would refuse it too, less politely)."""

    def clean_username(self):
        username = self.cleaned_data.get("username")
        if username and username_clash(username, exclude_pk=self.instance.pk) is not None:
            raise ValidationError("A user with that username already exists.", code="unique")
        return username


class UserCreateForm(_UniqueUsername, AdminUserCreationForm):
    pass


class UserEditForm(_UniqueUsername, UserChangeForm):
    pass


def _cancelled(user, outcome: tuple[int, list[str]]) -> str:
    flagged, refused = outcome
    text = f"{user}: {flagged} open order(s) cancelled."
    return text + (" Not cancelled: " + "; ".join(refused) if refused else "")


@admin.register(User)
class AuditedUserAdmin(AuditedModelAdmin, UserAdmin):
    audit_prefix = "USER"
    form = UserEditForm
    add_form = UserCreateForm
    list_display = ("username", "email", "is_active", "is_staff", "roles", "two_factor", "date_joined")
    list_filter = ("is_active", "is_staff", "is_superuser", "groups")
    search_fields = ("username", "email", "first_name", "last_name")
    actions = [
        reason_action(
            name="deactivate_selected", title="Deactivate (and cancel all their orders)",
            description="Sign-ins, sessions and API keys of these users stop working at once, their live "
                        "connections close, and every open order of theirs is cancelled.",
            permission="deactivate",
            apply=lambda user, actor, reason, audit: _cancelled(
                user, user_deactivate(user=user, actor=actor, reason=reason, audit=audit))),
        reason_action(
            name="reactivate_selected", title="Reactivate", description="These users may sign in again.",
            permission="deactivate",
            apply=lambda user, actor, reason, audit: user_reactivate(user=user, actor=actor, reason=reason,
                                                                     audit=audit)),
        reason_action(
            name="cancel_orders_selected", title="Cancel all open orders",
            description="Every open order of these users is cancelled, in every market that takes cancels.",
            permission="cancel_orders",
            apply=lambda user, actor, reason, audit: _cancelled(user, user_orders_cancel(user=user, audit=audit))),
        reason_action(
            name="reset_two_factor_selected", title="Reset two-factor authentication",
            description="Their authenticator is removed (a lost phone); staff set a new one up at their next "
                        "sign-in.",
            permission="deactivate",
            apply=lambda user, actor, reason, audit: user_totp_reset(user=user, actor=actor, reason=reason,
                                                                     audit=audit)),
    ]

    @admin.display(description="roles")
    def roles(self, user) -> str:
        names = [group.name for group in user.groups.all()]
        return ", ".join((["superuser"] if user.is_superuser else []) + names) or "-"

    @admin.display(description="2FA", boolean=True)
    def two_factor(self, user) -> bool:
        return totp_device(user) is not None

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("groups")

    # -- who may do what --------------------------------------------------------------------

    def has_change_permission(self, request, obj=None):
        if not super().has_change_permission(request, obj):
            return False
        # Only superusers edit staff accounts (and so grant roles).
        return obj is None or request.user.is_superuser or not (obj.is_staff or obj.is_superuser)

    def has_deactivate_permission(self, request):
        return request.user.has_perm("auth.change_user")

    def has_cancel_orders_permission(self, request):
        return request.user.has_perm("orders.change_order")

    def get_readonly_fields(self, request, obj=None):
        fields = ["is_active", "last_login", "date_joined"]
        if obj is not None and not request.user.is_superuser:
            fields += list(ROLE_FIELDS)
        return fields

    def user_change_password(self, request, id, form_url=""):
        # Whoever sets a password can sign in as the user: superusers only.
        if not request.user.is_superuser:
            raise PermissionDenied
        return super().user_change_password(request, id, form_url)

    # -- audit --------------------------------------------------------------------------------

    def audit_snapshot(self, user) -> dict:
        data = snapshot(user)
        data["groups"] = sorted(user.groups.values_list("name", flat=True))
        data["user_permissions"] = _permission_names(user.user_permissions.all())
        return data

    def audit_subject(self, user, object_id):
        return object_id

    def audit_rows(self, user, before, after):
        if before is None:
            return [(actions.USER_CREATE, None, after)]
        if after is None:
            return [(actions.USER_DELETE, before, None)]
        changed = [name for name in changed_fields(before, after) if name not in _NOT_EDITS]
        rows = []
        for action, names in ((actions.ROLE_CHANGE, [n for n in changed if n in ROLE_FIELDS]),
                              (actions.USER_UPDATE, [n for n in changed if n not in ROLE_FIELDS])):
            if names:
                rows.append((action, {n: before.get(n) for n in names}, {n: after.get(n) for n in names}))
        return rows


@admin.register(Group)
class AuditedGroupAdmin(AuditedModelAdmin, GroupAdmin):
    audit_prefix = "ROLE"

    def audit_snapshot(self, group) -> dict:
        return {"name": group.name, "permissions": _permission_names(group.permissions.all())}

    def audit_rows(self, group, before, after):
        rows = super().audit_rows(group, before, after)
        # ROLE_CREATE / ROLE_DELETE as they are; an edit of a role is a ROLE_CHANGE.
        return [(actions.ROLE_CHANGE if action == "ROLE_UPDATE" else action, b, a) for action, b, a in rows]


@admin.register(AccessAttempt)
class LoginLockoutAdmin(ReadOnlyAdmin):
    """Failed sign-ins per username and address (django-axes); a pair at the limit is locked out."""

    list_display = ("username", "ip_address", "failures_since_start", "attempt_time", "user_agent")
    list_filter = ("attempt_time",)
    search_fields = ("username", "ip_address")
    fields = ("username", "ip_address", "failures_since_start", "attempt_time", "user_agent", "path_info")
    readonly_fields = fields
    actions = [reason_action(
        name="lift_selected", title="Lift sign-in lockouts",
        description="These usernames may try to sign in from these addresses again.", permission="unlock",
        apply=lambda attempt, actor, reason, audit: login_lockouts_reset(
            attempts=AccessAttempt.objects.filter(pk=attempt.pk), actor=actor, reason=reason, audit=audit),
    )]

    def has_unlock_permission(self, request):
        return request.user.has_perm("axes.delete_accessattempt")

