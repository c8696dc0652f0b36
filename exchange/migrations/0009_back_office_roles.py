"""The back-office roles (Operators, Support, Compliance) as groups with their permissions
(exchange.roles.ROLE_GRANTS), audited ROLE_CREATE. Later changes of the permissions that exist
reach the roles after every migrate (exchange.roles.roles_sync_after_migrate)."""

from django.db import migrations


def create_roles(apps, schema_editor):
    # The permissions of every installed model must exist before the roles are given them;
    # Django creates them only after the last migration otherwise.
    from django.apps import apps as installed_apps
    from django.contrib.auth.management import create_permissions

    from exchange.audit.services import audit_system
    from exchange.roles import roles_sync

    for app_config in installed_apps.get_app_configs():
        create_permissions(app_config, verbosity=0, using=schema_editor.connection.alias)
    roles_sync(audit=audit_system("migration exchange 0009"))


class Migration(migrations.Migration):
    dependencies = [
        ("exchange", "0008_user_profile"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("wallet", "0003_staff_money_actions_four_eyes"),
        # The risk app's permissions exist before the roles are given theirs (create_permissions below reads the
        # installed models; this orders the migrations so a fresh database gets them in one pass).
        ("risk", "0001_limits_restrictions_alerts"),
    ]

    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
