"""What a request authenticated with an API key may do.

A view declares the key permission it needs with ``api_key_permission``:

- absent: safe methods (GET, HEAD, OPTIONS) need ``read``; other methods
  refuse keys (fail closed: a view that writes must say what it needs);
- a string, ``"read"``, ``"trade"`` or ``"withdraw"``: needed for every method;
- a dict per method, e.g. ``{"POST": "trade"}``; unlisted methods as if absent;
- ``SESSION_ONLY`` (alone or per method): keys are refused outright, e.g.
  on key management, so a leaked key cannot mint more keys.

Session-authenticated users hold every permission; this class only ever
restricts key-authenticated requests. It is in DEFAULT_PERMISSION_CLASSES;
a view that sets its own ``permission_classes`` must list it again (the
``exchange.E001`` system check refuses views that forget).
"""

from __future__ import annotations

from rest_framework.permissions import SAFE_METHODS, BasePermission

from exchange.apikeys.models import PERMISSIONS, READ, TRADE, WITHDRAW, ApiKey

SESSION_ONLY = "session_only"

__all__ = ["READ", "SESSION_ONLY", "TRADE", "WITHDRAW", "ApiKeyPermission", "required_api_key_permission"]


def required_api_key_permission(view, method: str) -> str | None:
    """The key permission ``view`` needs for ``method``: a permission, SESSION_ONLY, or None (keys refused)."""
    declared = getattr(view, "api_key_permission", None)
    if isinstance(declared, dict):
        declared = declared.get(method.upper())
    if declared is None:
        return READ if method.upper() in SAFE_METHODS else None
    assert declared in (*PERMISSIONS, SESSION_ONLY), f"{type(view).__name__}.api_key_permission: unknown {declared!r}"
    return declared


class ApiKeyPermission(BasePermission):
    def has_permission(self, request, view) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return True
        required = required_api_key_permission(view, request.method)
        if required == SESSION_ONLY:
            self.code = "API_KEY_NOT_ALLOWED"
            self.message = "This endpoint cannot be used with an API key; sign in with a session."
            return False
        if required is None:
            self.code = "API_KEY_PERMISSION_DENIED"
            self.message = f"This endpoint does not accept API keys for {request.method}."
            return False
        if not api_key.has_permission(required):
            self.code = "API_KEY_PERMISSION_DENIED"
            self.message = f"This API key lacks the '{required}' permission."
            return False
        return True
