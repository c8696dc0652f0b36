"""The back office's user and role pages: Django's own, with every change audited.

A user's edit writes ROLE_CHANGE for what decides their access (groups,
staff and superuser flags, direct permissions) and USER_UPDATE for the rest;
a role's (group's) permission edit writes ROLE_CHANGE. Passwords are never
recorded; their changes are PASSWORD_CHANGE rows (``exchange.audit.passwords``).
"""

from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.models import Group

from exchange.audit import actions
from exchange.audit.admin import AuditedModelAdmin
from exchange.audit.services import changed_fields, snapshot

User = get_user_model()
ROLE_FIELDS = ("is_staff", "is_superuser", "groups", "user_permissions")
# Written by logins, not by anyone editing the user.
_NOT_EDITS = {"last_login"}

admin.site.unregister(User)
admin.site.unregister(Group)


def _permission_names(permissions) -> list[str]:
    return sorted(f"{p.content_type.app_label}.{p.codename}" for p in permissions.select_related("content_type"))


@admin.register(User)
class AuditedUserAdmin(AuditedModelAdmin, UserAdmin):
    audit_prefix = "USER"

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
