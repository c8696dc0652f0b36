"""The roles are groups a migration creates, kept in line with exchange.roles after every migrate, least
privilege, and only superusers grant them (or anything else that decides access)."""

import pytest
from django.contrib.auth.models import Group

from exchange.audit.models import AuditLog
from exchange.roles import COMPLIANCE, OPERATORS, ROLE_GRANTS, SUPPORT, role_permissions, roles_sync_after_migrate
from tests.factories import UserFactory, login_staff

pytestmark = pytest.mark.django_db


def names(group: Group) -> set[str]:
    return {f"{p.content_type.app_label}.{p.codename}" for p in group.permissions.select_related("content_type")}


def test_the_migration_created_the_roles_with_their_permissions():
    """Without anyone calling roles_sync, the three groups exist (migration exchange 0009), audited as its rows."""
    for role in ROLE_GRANTS:
        group = Group.objects.get(name=role)
        assert names(group) == {f"{p.content_type.app_label}.{p.codename}" for p in role_permissions(role)}
    created = AuditLog.objects.filter(action="ROLE_CREATE", actor_system="migration exchange 0009")
    assert sorted(row.after["name"] for row in created) == sorted(ROLE_GRANTS)


def test_after_a_migrate_the_roles_catch_up_and_the_change_is_audited():
    """A permission missing from a role (as when a later migration adds a model) is granted by the
    post_migrate sync, with a ROLE_CHANGE row; groups that do not exist are not created there."""
    operators = Group.objects.get(name=OPERATORS)
    operators.permissions.remove(*operators.permissions.filter(codename="approve_withdrawal"))
    Group.objects.filter(name=SUPPORT).delete()

    roles_sync_after_migrate(sender=None)

    assert "wallet.approve_withdrawal" in names(Group.objects.get(name=OPERATORS))
    row = AuditLog.objects.filter(action="ROLE_CHANGE").order_by("-id").first()
    assert (row.actor_system, row.object_id) == ("manage.py migrate", str(operators.pk))
    assert "wallet.approve_withdrawal" not in row.before["permissions"]
    assert not Group.objects.filter(name=SUPPORT).exists()


def test_support_reads_users_orders_trades_and_cancels_orders_nothing_else():
    assert names(Group.objects.get(name=SUPPORT)) == {
        "auth.view_user", "orders.view_order", "orders.change_order", "orders.view_trade",
        "orders.view_orderamendment",
    }


def test_compliance_only_views():
    granted = names(Group.objects.get(name=COMPLIANCE))
    assert granted and all(name.split(".")[1].startswith("view_") for name in granted)
    assert {"exchange.view_auditlog", "wallet.view_ledgerentry", "orders.view_trade", "auth.view_user"} <= granted
    assert not any(name.startswith("otp_totp.") for name in granted)  # authenticator keys


def test_operators_run_the_venue_but_cannot_touch_roles_or_the_audit_trail():
    granted = names(Group.objects.get(name=OPERATORS))
    assert {"exchange.change_market", "wallet.add_deposit", "wallet.add_adjustment", "wallet.approve_withdrawal",
            "wallet.complete_withdrawal", "auth.change_user", "orders.change_order", "exchange.change_branding",
            "wallet.change_feetier"} <= granted
    assert not granted & {"auth.add_group", "auth.change_group", "auth.add_user", "auth.delete_user",
                          "exchange.change_auditlog", "exchange.delete_auditlog", "exchange.delete_legalhold",
                          "wallet.change_ledgerentry", "wallet.change_account", "exchange.delete_market"}


def test_an_operator_cannot_grant_roles_edit_staff_or_set_passwords(client):
    """The role fields of a trader's page are read-only to an operator, a staff member's page is refused, and so
    is setting anyone's password (whoever sets it can sign in as them)."""
    operator = UserFactory(username="olga", is_staff=True)
    operator.groups.add(Group.objects.get(name=OPERATORS))
    trader = UserFactory(username="tom")
    colleague = UserFactory(username="sam", is_staff=True)
    login_staff(client, operator)

    client.post(f"/admin/auth/user/{trader.pk}/change/", {
        "username": "tom", "email": "tom@example.test", "first_name": "Tom", "last_name": "", "is_staff": "on",
        "is_superuser": "on", "groups": [Group.objects.get(name=OPERATORS).pk], "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00"})

    trader.refresh_from_db()
    assert trader.first_name == "Tom"
    assert (trader.is_staff, trader.is_superuser, list(trader.groups.all())) == (False, False, [])
    assert client.get(f"/admin/auth/user/{colleague.pk}/change/").context["has_change_permission"] is False
    assert client.post(f"/admin/auth/user/{colleague.pk}/change/", {"username": "sam"}).status_code == 403
    assert client.get(f"/admin/auth/user/{trader.pk}/password/").status_code == 403
