"""API keys: model, encrypted secrets, signed-request authentication and key permissions.

- ``signing``: the canonical request and HMAC signature (client and server).
- ``authentication.ApiKeyAuthentication``: DRF authentication of signed requests.
- ``permissions.ApiKeyPermission``: what a key-authenticated request may do.
- ``services`` / ``selectors``: create, revoke and list a user's keys.
"""
