"""Back-office roles as Django groups, least privilege.

- **Operators** run the venue: assets, markets (and their status), branding,
  fees, users (deactivating one cancels all their orders), API keys
  (revoking), deposits, adjustments and withdrawal review (through the
  four-eyes services), risk limits, restrictions and alerts, legal holds,
  sign-in lockouts, the outbox. They read the audit trail but cannot export it.
- **Support** answers tickets: reads users, orders and trades, and cancels a
  user's orders. No money, no configuration.
- **Compliance** reads everything and exports (``exchange.audit.permissions``:
  exports are for this role alone).

Roles and superusers are granted only by superusers: the user page's role
fields (groups, staff and superuser flags, permissions) are read-only to
everyone else (``exchange.accounts.admin``).

The groups are created by migration ``exchange`` 0009 and kept exactly in
line with ``ROLE_GRANTS`` by ``roles_sync``: after every ``migrate`` (so the
permissions of models added later, such as the risk app's, reach the roles)
and by ``manage.py sync_roles``. A group it creates or whose permissions it
changes gets its ROLE_CREATE / ROLE_CHANGE audit row.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission
from django.db import transaction

OPERATORS = "Operators"
SUPPORT = "Support"
COMPLIANCE = "Compliance"

VIEW, ADD, CHANGE, DELETE = "view", "add", "change", "delete"

# "app_label.model" (or "app_label.*" for every model of the app) -> the verbs
# granted: a permission "<verb>_<model>" is granted when its verb is listed.
# Verbs beyond Django's four are the models' own permissions (Meta.permissions).
ROLE_GRANTS: dict[str, dict[str, tuple[str, ...]]] = {
    OPERATORS: {
        "exchange.asset": (VIEW, ADD, CHANGE),
        "exchange.market": (VIEW, ADD, CHANGE),  # change: terms, and halt/resume through the matcher
        "exchange.branding": (VIEW, ADD, CHANGE),
        "exchange.apikey": (VIEW, CHANGE),  # change: revoke
        "exchange.outboxevent": (VIEW, "requeue"),
        "exchange.auditlog": (VIEW,),
        "exchange.auditcheckpoint": (VIEW,),
        "exchange.legalhold": (VIEW, ADD, CHANGE),  # change: release
        "orders.order": (VIEW, CHANGE),  # change: cancel (the only change staff make to an order)
        "orders.trade": (VIEW,),
        "orders.orderamendment": (VIEW,),
        "matching.marketstate": (VIEW,),
        "matching.marketstatuschange": (VIEW,),
        "wallet.account": (VIEW,),
        "wallet.ledgertransaction": (VIEW,),
        "wallet.ledgerentry": (VIEW,),
        "wallet.hold": (VIEW,),
        "wallet.deposit": (VIEW, ADD),  # add: credit
        "wallet.adjustment": (VIEW, ADD),
        "wallet.withdrawal": (VIEW, "approve", "complete"),
        "wallet.moneyaction": (VIEW,),  # deciding one needs the permission of its kind
        "wallet.feetier": (VIEW, ADD, CHANGE, DELETE),
        "wallet.feeoverride": (VIEW, ADD, CHANGE, DELETE),
        "auth.user": (VIEW, CHANGE),  # change: details, deactivation, two-factor reset; not roles
        "exchange.userprofile": (VIEW, ADD, CHANGE),  # the KYC tier, on a trader's risk page
        "axes.accessattempt": (VIEW, DELETE),  # delete: lift a sign-in lockout
        "risk.*": (VIEW, ADD, CHANGE),  # limits (cleared by emptying them), restrictions, alerts, surveillance
    },
    SUPPORT: {
        "auth.user": (VIEW,),
        "orders.order": (VIEW, CHANGE),  # change: cancel
        "orders.trade": (VIEW,),
        "orders.orderamendment": (VIEW,),
    },
    COMPLIANCE: {
        f"{app}.*": (VIEW,) for app in ("exchange", "orders", "matching", "risk", "wallet", "auth", "axes")
    },
}


def role_permissions(role: str) -> list[Permission]:
    """The permissions ``ROLE_GRANTS`` gives ``role``, among those that exist now."""
    wanted = []
    for target, verbs in ROLE_GRANTS[role].items():
        app_label, model = target.split(".")
        candidates = Permission.objects.filter(content_type__app_label=app_label).select_related("content_type")
        if model != "*":
            candidates = candidates.filter(content_type__model=model)
        wanted.extend(p for p in candidates if p.codename.split("_", 1)[0] in verbs)
    return wanted


def _names(permissions) -> list[str]:
    return sorted(f"{p.content_type.app_label}.{p.codename}" for p in permissions)


@transaction.atomic
def roles_sync(*, audit: dict | None = None, create: bool = True) -> dict[str, Group]:
    """Give each role exactly its permissions; ``create=False`` only updates the groups that exist."""
    from exchange.audit import actions
    from exchange.audit.services import audit_log_record

    groups = {}
    for role in ROLE_GRANTS:
        if create:
            group, created = Group.objects.get_or_create(name=role)
        else:
            group, created = Group.objects.filter(name=role).first(), False
            if group is None:
                continue
        before = _names(group.permissions.select_related("content_type"))
        permissions = role_permissions(role)
        after = _names(permissions)
        if created or before != after:
            group.permissions.set(permissions)
            audit_log_record(action=actions.ROLE_CREATE if created else actions.ROLE_CHANGE, object_type="auth.group",
                             object_id=group.pk, before=None if created else {"permissions": before},
                             after={"name": role, "permissions": after}, **(audit or {}))
        groups[role] = group
    return groups


def roles_sync_after_migrate(sender, using="default", **kwargs) -> None:
    """post_migrate: bring the existing roles in line with the permissions that exist now."""
    from django.apps import apps
    from django.contrib.auth.management import create_permissions

    from exchange.audit.services import audit_system

    for app_config in apps.get_app_configs():
        create_permissions(app_config, verbosity=0, using=using)
    roles_sync(audit=audit_system("manage.py migrate"), create=False)
