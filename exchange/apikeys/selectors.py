"""Reads of API keys, scoped to who asks."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from exchange.apikeys.models import ApiKey


def api_key_list_for_user(*, user) -> QuerySet[ApiKey]:
    """The user's keys, newest first, revoked and expired ones included."""
    return ApiKey.objects.filter(user=user).order_by("-created_at", "-id")


def api_key_get_for_user(*, user, key_id: str) -> ApiKey:
    """The user's key ``key_id``; Http404 if there is none, including another user's key."""
    api_key = api_key_list_for_user(user=user).filter(key_id=key_id).first()
    if api_key is None:
        raise Http404("No such API key.")
    return api_key


def api_key_get_for_authentication(*, key_id: str) -> ApiKey | None:
    """The key presented in a request, with its user, whatever its state."""
    return ApiKey.objects.select_related("user").filter(key_id=key_id).first()
