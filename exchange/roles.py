"""Back-office roles as Django groups, least privilege.

- Operators: run the venue (assets, markets, branding, users' money
  through the wallet's admin actions); no permission to alter the audit
  trail.
- Support: read users, orders and balances to answer tickets.
- Compliance: read-only on everything, for investigations and exports.

``roles_sync()`` (re)creates the groups with exactly these permissions; it
runs on ``migrate`` of the demo and with ``manage.py sync_roles``. A group it
creates or whose permissions it changes gets its ROLE_CREATE / ROLE_CHANGE
audit row.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.db import transaction

OPERATORS = "Operators"
SUPPORT = "Support"
COMPLIANCE = "Compliance"

# app label -> permission verbs (add, change, delete, view) per role.
_APPS = ("exchange", "orders", "matching", "risk", "wallet", "auth")
ROLE_GRANTS: dict[str, dict[str, tuple[str, ...]]] = {
    OPERATORS: {
        # "requeue": put FAILED outbox events back in the relay's queue.
        "exchange": ("add", "change", "view", "requeue"),
        "orders": ("view",),
        "matching": ("view",),
        "risk": ("add", "change", "view"),
        # Money moves only through the wallet's forms and actions (crediting a
        # deposit, adjusting a balance, reviewing withdrawals), which call
        # services and record a reason; ledger rows themselves are read-only.
        "wallet": ("add", "change", "delete", "view", "review"),
        "auth": ("view",),
    },
    SUPPORT: {"orders": ("view",), "wallet": ("view",), "auth": ("view",), "exchange": ("view",)},
    COMPLIANCE: {app: ("view",) for app in _APPS},
}


def _names(permissions) -> list[str]:
    return sorted(f"{p.content_type.app_label}.{p.codename}" for p in permissions)


@transaction.atomic
def roles_sync(*, audit: dict | None = None) -> dict[str, Group]:
    from exchange.audit import actions
    from exchange.audit.services import audit_log_record

    groups = {}
    for role, grants in ROLE_GRANTS.items():
        group, created = Group.objects.get_or_create(name=role)
        before = _names(group.permissions.select_related("content_type"))
        permissions = []
        for app_label, verbs in grants.items():
            candidates = Permission.objects.filter(content_type__app_label=app_label).select_related("content_type")
            for permission in candidates:
                if permission.codename.split("_", 1)[0] in verbs:
                    permissions.append(permission)
        group.permissions.set(permissions)
        after = _names(permissions)
        if created or before != after:
            audit_log_record(action=actions.ROLE_CREATE if created else actions.ROLE_CHANGE, object_type="auth.group",
                             object_id=group.pk, before=None if created else {"permissions": before},
                             after={"name": role, "permissions": after}, **(audit or {}))
        groups[role] = group
    return groups
