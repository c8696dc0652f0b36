"""Usernames are unique after Unicode normalization and without regard to case.

"Alice", "alice" and "ａｌｉｃｅ" (full-width letters) are one name: the
database holds it with a unique index on ``exchange_username_key(username)``
= ``lower(normalize(username, NFKC))`` (migration exchange 0010), whatever
door creates the user (registration, the back office, ``createsuperuser``).
``username_clash`` asks the database the same question before a write, so
forms and the API answer with a field error rather than an IntegrityError.
"""

from __future__ import annotations

import unicodedata

from django.contrib.auth import get_user_model
from django.db.models import CharField, Func, Value

UNIQUE_INDEX = "auth_user_username_key_unique"


class UsernameKey(Func):
    """``exchange_username_key(expression)``: the name as the unique index compares it."""

    function = "exchange_username_key"
    output_field = CharField()


def username_key(username: str) -> str:
    """The same key computed in Python (lockout counting; the database's is authoritative)."""
    return unicodedata.normalize("NFKC", username or "").lower()


def username_clash(username: str, *, exclude_pk: int | None = None):
    """The user whose name equals ``username`` after normalization and case folding, or None."""
    users = get_user_model().objects.annotate(name_key=UsernameKey("username")).filter(
        name_key=UsernameKey(Value(username)))
    if exclude_pk is not None:
        users = users.exclude(pk=exclude_pk)
    return users.first()
