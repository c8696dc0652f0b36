"""Production settings: real servers and a real secret are required.

Run with DJANGO_SETTINGS_MODULE=exchange.settings.production. This module
refuses to load without SECRET_KEY, API_KEY_ENCRYPTION_KEY, AUDIT_SIGNING_KEY,
DATABASE_URL, REDIS_URL and ALLOWED_HOSTS from the environment (the embedded servers are a
development convenience), and ``manage.py check --deploy`` is clean with it.

The demo stays out: EXCHANGE_DEMO=1 or an EXCHANGE_DEMO_PASSWORD are refused,
``load_demo`` refuses to run, and the web server refuses to start while an
active account has the demo's password. /health shows no error text, and
/metrics should be restricted (METRICS_TOKEN or METRICS_ALLOWED_NETWORKS;
``check --deploy`` warns otherwise).
"""

import os

from django.core.exceptions import ImproperlyConfigured


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        raise ImproperlyConfigured(f"{name} must be set in the environment for production")
    return value


_secret_key = _required("SECRET_KEY")
if len(_secret_key) < 50 or len(set(_secret_key)) < 5 or _secret_key.startswith("django-insecure"):
    raise ImproperlyConfigured("SECRET_KEY must be a random value of at least 50 characters")
# API key secrets must not depend on SECRET_KEY (see exchange/apikeys/encryption.py).
_required("API_KEY_ENCRYPTION_KEY")
# The audit chain's signatures must not depend on SECRET_KEY either (exchange/audit/signing.py).
if any(len(key.strip()) < 32 for key in _required("AUDIT_SIGNING_KEY").split(",") if key.strip()):
    raise ImproperlyConfigured("Each AUDIT_SIGNING_KEY must be at least 32 characters long")
_required("DATABASE_URL")
_required("REDIS_URL")
_required("ALLOWED_HOSTS")
if os.environ.get("DEBUG", "").strip().lower() in ("1", "true", "yes", "on"):
    raise ImproperlyConfigured("DEBUG must be off in production")
if os.environ.get("EXCHANGE_DEMO", "").strip().lower() in ("1", "true", "yes", "on"):
    raise ImproperlyConfigured("EXCHANGE_DEMO must be off in production: the demo's users have a published password")
if os.environ.get("EXCHANGE_DEMO_PASSWORD"):
    raise ImproperlyConfigured("EXCHANGE_DEMO_PASSWORD must not be set in production")

from .base import *  # noqa: E402,F403
from .base import env_bool, env_int  # noqa: E402

DEBUG = False
SECRET_KEY = _secret_key
EXCHANGE_DEMO = False
EXCHANGE_DEMO_ALLOWED = False
EXCHANGE_DEMO_MARKET_MAKER = False
REFUSE_DEFAULT_PASSWORDS = True
HEALTH_SHOW_ERRORS = False
WHITENOISE_USE_FINDERS = False

# TLS terminates at the proxy in front of daphne; it must set X-Forwarded-Proto.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
SECURE_REDIRECT_EXEMPT = [r"^health", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = True
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"
# HSTS preloading is hard to undo; whether to submit the domain to browser
# preload lists is the operator's decision (SECURE_HSTS_PRELOAD=1).
SILENCED_SYSTEM_CHECKS = [*SILENCED_SYSTEM_CHECKS, "security.W021"]  # noqa: F405
