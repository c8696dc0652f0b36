"""Usernames unique after Unicode normalization (NFKC) and without regard to case: a unique index
on exchange_username_key(username) = lower(normalize(username, NFKC)) (exchange/accounts/usernames.py).

Existing accounts whose names clash stop the migration with the list of them, before anything
changes; rename all but one of each and migrate again."""

from django.core.management.base import CommandError
from django.db import migrations

KEY_FUNCTION = """
    CREATE FUNCTION exchange_username_key(name text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT lower(normalize(name, NFKC)) $$
"""

CLASHES = """
    SELECT array_agg(username ORDER BY id), array_agg(id ORDER BY id)
    FROM auth_user GROUP BY exchange_username_key(username) HAVING count(*) > 1
    ORDER BY min(id)
"""


def clashes_report(cursor) -> str | None:
    """A readable list of the accounts whose usernames clash, or None when there are none."""
    cursor.execute(CLASHES)
    groups = cursor.fetchall()
    if not groups:
        return None
    lines = ["  " + ", ".join(f"{name!r} (id {pk})" for name, pk in zip(names, ids)) for names, ids in groups]
    return ("Usernames must be unique after Unicode normalization (NFKC) and without regard to case, but these "
            "accounts share a name:\n" + "\n".join(lines) + "\nRename all but one account of each line (back office "
            "› Users, or manage.py shell), then run migrate again.")


def refuse_clashes(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        report = clashes_report(cursor)
    if report:
        raise CommandError(report)


class Migration(migrations.Migration):
    dependencies = [
        ("exchange", "0009_back_office_roles"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [
        migrations.RunSQL(KEY_FUNCTION, "DROP FUNCTION exchange_username_key(text)"),
        migrations.RunPython(refuse_clashes, migrations.RunPython.noop),
        migrations.RunSQL(
            "CREATE UNIQUE INDEX auth_user_username_key_unique ON auth_user (exchange_username_key(username))",
            "DROP INDEX auth_user_username_key_unique",
        ),
    ]
