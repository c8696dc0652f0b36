"""Writes of API keys: create (the secret is returned once), revoke, mark used, re-encrypt."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from exchange.apikeys.encryption import secret_encrypt, secret_reencrypt
from exchange.apikeys.models import PERMISSIONS, READ, TRADE, WITHDRAW, ApiKey
from exchange.apikeys.selectors import api_key_get_for_user
from exchange.audit import actions
from exchange.audit.services import audit_log_record, audit_origin
from exchange.core.errors import ApplicationError
from exchange.core.localcache import config_changed
from exchange.live.control import connections_close_on_commit

IP_ALLOWLIST_ENTRIES_MAX = 30
# The widest network a key that may withdraw can be used from.
WITHDRAW_PREFIX_MIN = {4: 16, 6: 48}
LAST_USED_RESOLUTION = timedelta(minutes=1)


def ip_allowlist_normalize(entries: Iterable[str], *, withdraw: bool = False) -> list[str]:
    """Each entry as a network in CIDR notation (a lone address gets /32 or /128), duplicates dropped.

    Raises INVALID_IP_ALLOWLIST naming the entry (``ip_allowlist.<index>``).
    Host bits set under the mask (``10.0.0.1/8``) are refused rather than
    silently widened. For a key that may ``withdraw``, a network wider than
    /16 (IPv4) or /48 (IPv6) is refused (IP_ALLOWLIST_TOO_WIDE).
    """
    networks: list[str] = []
    for index, entry in enumerate(entries):
        try:
            network = ipaddress.ip_network(str(entry).strip(), strict=True)
        except ValueError:
            raise ApplicationError(
                "INVALID_IP_ALLOWLIST",
                f"{entry!r} is not an IP address or a network in CIDR notation (e.g. 203.0.113.0/24).",
                field=f"ip_allowlist.{index}",
            ) from None
        if withdraw and network.prefixlen < WITHDRAW_PREFIX_MIN[network.version]:
            raise ApplicationError(
                "IP_ALLOWLIST_TOO_WIDE",
                f"{network} is too wide for a key that may withdraw: at most /{WITHDRAW_PREFIX_MIN[network.version]} "
                f"for IPv{network.version}.",
                field=f"ip_allowlist.{index}",
            )
        if str(network) not in networks:
            networks.append(str(network))
    if len(networks) > IP_ALLOWLIST_ENTRIES_MAX:
        raise ApplicationError(
            "INVALID_IP_ALLOWLIST", f"At most {IP_ALLOWLIST_ENTRIES_MAX} entries are allowed.", field="ip_allowlist"
        )
    return networks


def api_key_allowlist_check(*, permissions: Iterable[str], ip_allowlist: Iterable[str]) -> list[str]:
    """The normalized allowlist of a key with ``permissions``; a key that may withdraw needs one
    (WITHDRAW_REQUIRES_IP_ALLOWLIST) of narrow enough networks (IP_ALLOWLIST_TOO_WIDE)."""
    withdraw = WITHDRAW in set(permissions)
    networks = ip_allowlist_normalize(ip_allowlist, withdraw=withdraw)
    if withdraw and not networks:
        raise ApplicationError(
            "WITHDRAW_REQUIRES_IP_ALLOWLIST",
            "A key with the withdraw permission must be limited to an IP allowlist.",
            field="ip_allowlist",
        )
    return networks


@transaction.atomic
def api_key_create(
    *,
    user,
    label: str,
    permissions: Iterable[str],
    ip_allowlist: Iterable[str],
    expires_at: datetime | None = None,
    audit: dict | None = None,
) -> tuple[ApiKey, str]:
    """A new key for ``user`` and its plain secret, which is not kept anywhere in clear.

    ``read`` is always granted. ``withdraw`` requires an IP allowlist of
    networks no wider than /16 (IPv4) or /48 (IPv6), as on every exchange
    that lets keys move money out; the API asks for step-up before creating
    such a key (``exchange.accounts.stepup``). ``audit``: the request's
    ``audit_context`` (every service here takes it); without it the audit
    row names ``user`` as the actor.
    """
    label = label.strip()
    if not 0 < len(label) <= ApiKey._meta.get_field("label").max_length:
        raise ApplicationError("INVALID_LABEL", "The label must be 1 to 64 characters.", field="label")
    permissions = set(permissions)
    unknown = permissions - set(PERMISSIONS)
    if unknown:
        raise ApplicationError(
            "INVALID_PERMISSION", f"Unknown permission(s): {', '.join(sorted(unknown))}.", field="permissions"
        )
    networks = api_key_allowlist_check(permissions=permissions, ip_allowlist=ip_allowlist)
    now = timezone.now()
    if expires_at is not None and expires_at <= now:
        raise ApplicationError("EXPIRES_AT_IN_PAST", "expires_at must be in the future.", field="expires_at")

    # Lock the user's row so that concurrent creations count each other.
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    active = ApiKey.objects.filter(user=user, revoked_at__isnull=True).filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now)
    )
    if active.count() >= settings.API_KEYS_MAX_PER_USER:
        raise ApplicationError(
            "API_KEY_LIMIT_REACHED",
            f"A user may hold at most {settings.API_KEYS_MAX_PER_USER} active API keys; revoke one first.",
        )

    secret = secrets.token_urlsafe(48)
    api_key = ApiKey.objects.create(
        user=user,
        label=label,
        key_id=secrets.token_urlsafe(32),
        secret_encrypted=secret_encrypt(secret),
        can_trade=TRADE in permissions,
        can_withdraw=WITHDRAW in permissions,
        ip_allowlist=networks,
        expires_at=expires_at,
    )
    assert api_key.has_permission(READ)
    audit_log_record(action=actions.API_KEY_CREATE, object_type="exchange.apikey", object_id=api_key.pk,
                     after=api_key_state(api_key), subject_user=user, **audit_origin(audit, user=user))
    return api_key, secret


def api_key_state(api_key: ApiKey) -> dict:
    """What the audit trail records of a key: never its secret."""
    return {"key_id": api_key.key_id, "label": api_key.label, "permissions": api_key.permissions,
            "ip_allowlist": api_key.ip_allowlist, "expires_at": api_key.expires_at, "revoked_at": api_key.revoked_at}


def _record_revoke(api_key: ApiKey, *, audit: dict | None) -> None:
    """The revocation's audit row; after commit, the key's live connections are closed."""
    connections_close_on_commit(user_id=api_key.user_id, api_key_id=api_key.pk, reason="API key revoked")
    before = {**api_key_state(api_key), "revoked_at": None}
    audit_log_record(action=actions.API_KEY_REVOKE, object_type="exchange.apikey", object_id=api_key.pk,
                     before=before, after=api_key_state(api_key), subject_user=api_key.user_id,
                     **audit_origin(audit, user=api_key.user))


@transaction.atomic
def api_key_revoke(*, user, key_id: str, audit: dict | None = None) -> ApiKey:
    """Revoke the user's key (idempotent: revoking twice keeps the first time)."""
    api_key = api_key_get_for_user(user=user, key_id=key_id)
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        _record_revoke(api_key, audit=audit)
    return api_key


@transaction.atomic
def api_key_revoke_many(*, api_keys: QuerySet[ApiKey], audit: dict | None = None) -> int:
    """Back office: revoke every key of ``api_keys`` not yet revoked; returns how many."""
    now = timezone.now()
    revoked = list(api_keys.filter(revoked_at__isnull=True).select_for_update(of=("self",))
                   .select_related("user").order_by("id"))
    ApiKey.objects.filter(id__in=[api_key.pk for api_key in revoked]).update(revoked_at=now)
    for api_key in revoked:
        api_key.revoked_at = now
        _record_revoke(api_key, audit=audit)
    if revoked:
        config_changed()  # keys are cached per process for authentication
    return len(revoked)


def api_key_mark_used(*, api_key: ApiKey, now: datetime) -> None:
    """Record use, writing at most once a minute per key rather than once per request.

    The conditional UPDATE keeps concurrent requests from all writing when
    the minute has passed.
    """
    if api_key.last_used_at is not None and now - api_key.last_used_at < LAST_USED_RESOLUTION:
        return
    ApiKey.objects.filter(pk=api_key.pk).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now)
    api_key.last_used_at = now


@transaction.atomic
def api_key_secrets_reencrypt(*, audit: dict | None = None) -> int:
    """Re-encrypt every stored secret with the current (first) encryption key; returns the count."""
    count = 0
    for api_key in ApiKey.objects.select_for_update().order_by("id"):
        api_key.secret_encrypted = secret_reencrypt(api_key.secret_encrypted)
        api_key.save(update_fields=["secret_encrypted"])
        count += 1
    audit_log_record(action=actions.API_KEYS_REENCRYPT, object_type="exchange.apikey", object_id="",
                     after={"reencrypted": count}, **audit_origin(audit))
    return count
