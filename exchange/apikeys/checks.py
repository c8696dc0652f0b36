"""System checks: API key permissions cannot be bypassed, and the encryption keys are usable."""

from __future__ import annotations

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.permissions import AllowAny


def _views(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _views(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            view_class = getattr(pattern.callback, "cls", None)
            if view_class is not None:
                yield prefix + str(pattern.pattern), view_class


def views_missing_api_key_permission(patterns) -> list[tuple[str, type]]:
    """DRF views that accept API keys but would not check the key's permissions."""
    from exchange.apikeys.authentication import ApiKeyAuthentication
    from exchange.apikeys.permissions import ApiKeyPermission

    missing = []
    for route, view_class in _views(patterns):
        authenticators = getattr(view_class, "authentication_classes", ())
        if not any(isinstance(a, type) and issubclass(a, ApiKeyAuthentication) for a in authenticators):
            continue
        permissions = list(getattr(view_class, "permission_classes", ()))
        if permissions and all(p is AllowAny for p in permissions):
            continue  # public: anyone may call it anyway
        if not any(isinstance(p, type) and issubclass(p, ApiKeyPermission) for p in permissions):
            missing.append((route, view_class))
    return missing


@checks.register(checks.Tags.security)
def check_views_enforce_api_key_permissions(app_configs=None, **kwargs):
    return [
        checks.Error(
            f"{view_class.__module__}.{view_class.__qualname__} ({route}) accepts API keys but its "
            "permission_classes lack ApiKeyPermission, so a read-only key could call it.",
            hint="Add exchange.apikeys.permissions.ApiKeyPermission to permission_classes.",
            obj=view_class,
            id="exchange.E001",
        )
        for route, view_class in views_missing_api_key_permission(get_resolver().url_patterns)
    ]


@checks.register(checks.Tags.security)
def check_api_key_encryption_keys(app_configs=None, **kwargs):
    from exchange.apikeys.encryption import configured_keys

    try:
        configured_keys()
    except ImproperlyConfigured as exc:
        return [checks.Error(str(exc), id="exchange.E002")]
    if not settings.API_KEY_ENCRYPTION_KEYS and not settings.DEBUG and kwargs.get("deploy"):
        return [
            checks.Warning(
                "API_KEY_ENCRYPTION_KEY is unset: API key secrets are encrypted with a key derived from SECRET_KEY.",
                hint="Set API_KEY_ENCRYPTION_KEY so that rotating SECRET_KEY cannot lock the secrets away.",
                id="exchange.W001",
            )
        ]
    return []
