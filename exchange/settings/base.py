"""Settings shared by every use, read from the environment (12-factor).

This module is also the local/development configuration that ``make run``
uses. ``test.py`` and ``production.py`` adjust it.

When DATABASE_URL or REDIS_URL is unset, importing these settings starts (or
attaches to) embedded PostgreSQL and Redis servers under EXCHANGE_DATA_DIR;
see ``exchange.runtime``.
"""

from __future__ import annotations

import os
import secrets
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from exchange import runtime
from exchange.core.config import (
    celery_redis_url,
    database_settings,
    env_amounts,
    env_bool,
    env_int,
    env_list,
    process_role,
    redis_db_of,
    redis_url_with_db,
)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
DATA_DIR = Path(os.environ.get("EXCHANGE_DATA_DIR") or BASE_DIR / "var").resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])


def _local_secret_key() -> str:
    """A per-installation key kept in the data folder, never in the repository."""
    path = DATA_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(64))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = os.environ.get("SECRET_KEY") or _local_secret_key()

# --- Services ----------------------------------------------------------------

DATABASE_URL, REDIS_URL = runtime.ensure_services(DATA_DIR)
KAFKA_BOOTSTRAP_SERVERS = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")

DATABASES = {"default": database_settings(DATABASE_URL)}
# Each process names itself to PostgreSQL (pg_stat_activity.application_name):
# exchange:web, exchange:run_matcher, exchange:celery... unless the URL names it.
DATABASES["default"]["OPTIONS"].setdefault("application_name", process_role(sys.argv))
# A pool of connections per process (psycopg_pool): a request borrows one
# instead of opening its own. DATABASE_POOL_MAX_SIZE=0 disables it, and
# DATABASE_CONN_MAX_AGE then keeps one connection per thread instead.
DATABASE_POOL_MAX_SIZE = env_int("DATABASE_POOL_MAX_SIZE", 10)
if DATABASE_POOL_MAX_SIZE > 0:
    DATABASES["default"]["OPTIONS"]["pool"] = {"min_size": 1, "max_size": DATABASE_POOL_MAX_SIZE, "timeout": 10}
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env_int("DATABASE_CONN_MAX_AGE", 0)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# One Redis server, one logical database per purpose, counted from the
# database number in REDIS_URL.
_REDIS_DB_BASE = redis_db_of(REDIS_URL)
REDIS_APP_URL = redis_url_with_db(REDIS_URL, _REDIS_DB_BASE)  # command streams, heartbeats, throttles, depth
REDIS_CHANNELS_URL = redis_url_with_db(REDIS_URL, _REDIS_DB_BASE + 1)
REDIS_CACHE_URL = redis_url_with_db(REDIS_URL, _REDIS_DB_BASE + 3)

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_CACHE_URL,
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_CHANNELS_URL], "capacity": 1000, "expiry": 30},
    }
}

CELERY_BROKER_URL = celery_redis_url(REDIS_URL, _REDIS_DB_BASE + 2)
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's Django fixup closes every database connection before and after each task, and in
# a prefork worker with a pool it closes the whole pool: with the beat's tasks every second,
# two new PostgreSQL backends (and pool threads) a second. It does that only every 2 x this
# many tasks instead; exchange.celery returns the connections to the pool after each task
# (close_old_connections, as Django does after a request), and a child's pool is still
# closed when the child starts (the fixup's worker_process_init).
CELERY_DB_REUSE_MAX = 10**9
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE: dict = {}
CELERY_IMPORTS = ["exchange.outbox.tasks", "risk.tasks"]
CELERY_TASK_ROUTES = {"exchange.outbox.tasks.*": {"queue": "outbox"}, "risk.tasks.*": {"queue": "risk"}}

# --- Django ------------------------------------------------------------------

INSTALLED_APPS = [
    # Django's admin with the back office's site (two-factor sign-in, dashboard): exchange/backoffice.
    "exchange.backoffice.apps.BackOfficeAdminConfig",
    # Before django.contrib.auth: its createsuperuser records the new account (exchange/cli).
    "exchange.cli.apps.CliConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "exchange",
    "orders",
    "matching",
    "risk",
    "wallet",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "exchange.core.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "exchange.audit.middleware.CurrentRequestMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "exchange.urls"
ASGI_APPLICATION = "exchange.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "exchange.branding.branding_context",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    # The demo's published password is nobody's password (exchange/accounts/passwords.py).
    {"NAME": "exchange.accounts.passwords.DefaultPasswordValidator"},
    # Accept every password; record each change in the audit trail (PASSWORD_CHANGE)
    # and close the live connections of the user's sessions.
    {"NAME": "exchange.audit.passwords.PasswordChangeAudit"},
    {"NAME": "exchange.accounts.passwords.PasswordChangeEndsSessions"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
# Serve app static files (admin, Swagger UI) straight from the packages, so a
# local run needs no collectstatic; production collects them into STATIC_ROOT.
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "/admin/login/"

# --- Sign-in security (docs/OPERATOR.md, "Staff accounts") -------------------

# django-axes counts failed sign-ins per username and client address (both
# doors: the back office's form and POST /api/v1/auth/login) and refuses that
# pair for a while after too many. No middleware: the two sign-in views answer
# a lockout themselves, so requests that do not sign in pay nothing.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_DISABLE_ACCESS_LOG = True  # sign-ins are in the audit trail (LOGIN)
AXES_ENABLE_ADMIN = False  # exchange/accounts/admin.py shows lockouts, with an audited unlock
AXES_CLIENT_IP_CALLABLE = "exchange.core.net.client_ip"
AXES_USERNAME_CALLABLE = "exchange.accounts.lockout.lockout_username"
# Masked in the failure records axes keeps of each attempt's form data.
AXES_SENSITIVE_PARAMETERS = ["password", "otp_token", "otp", "csrfmiddlewaretoken"]
AXES_VERBOSE = False
# The TOTP second factor (django-otp): required for staff, optional for traders.
OTP_TOTP_ISSUER = os.environ.get("OTP_TOTP_ISSUER", "Exchange")
SILENCED_SYSTEM_CHECKS = [
    # axes.W002 asks for AxesMiddleware, which only turns a lockout into a
    # response; the sign-in views do that themselves (exchange/accounts/lockout.py).
    "axes.W002",
]

# --- API ---------------------------------------------------------------------

REST_FRAMEWORK = {
    # A request signed with an API key (X-API-KEY...) is authenticated by the
    # key and needs no CSRF token; anything else falls to the session, whose
    # unsafe requests need one.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "exchange.apikeys.authentication.ApiKeyAuthentication",
        "exchange.accounts.authentication.SessionAuthentication",
    ],
    # ApiKeyPermission: a key needs the view's `api_key_permission`.
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "exchange.apikeys.permissions.ApiKeyPermission",
    ],
    # Redis sliding windows per API key, user or IP (exchange/core/throttling.py);
    # a view adds a scope of its own with `throttle_scope = "orders"`.
    "DEFAULT_THROTTLE_CLASSES": ["exchange.core.throttling.RedisThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("THROTTLE_RATE_ANON", "100/s"),
        "user": os.environ.get("THROTTLE_RATE_USER", "300/s"),
        "orders": os.environ.get("THROTTLE_RATE_ORDERS", "100/s"),
        "auth": os.environ.get("THROTTLE_RATE_AUTH", "10/m"),
        # Failed API-key authentications per client IP and per key id.
        "auth_failures": os.environ.get("THROTTLE_RATE_AUTH_FAILURES", "30/m"),
    },
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["exchange.core.parsers.DecimalJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "exchange.core.schema.ExchangeAutoSchema",
    "EXCEPTION_HANDLER": "exchange.core.errors.api_exception_handler",
    "COERCE_DECIMAL_TO_STRING": True,
}

# Clients reach the web process through this many reverse proxies, each of
# which appends to X-Forwarded-For; 0 means REMOTE_ADDR is the client.
NUM_PROXIES = env_int("NUM_PROXIES", 0)
REST_FRAMEWORK["NUM_PROXIES"] = NUM_PROXIES

# --- API keys ----------------------------------------------------------------

# Fernet keys (comma-separated, first one encrypts) for API key secrets at
# rest; unset: derived from SECRET_KEY. See exchange/apikeys/encryption.py.
API_KEY_ENCRYPTION_KEYS = env_list("API_KEY_ENCRYPTION_KEY", [])
# How far in the future a signed request's timestamp may be (client clocks run fast).
API_KEY_CLOCK_SKEW_MS = env_int("API_KEY_CLOCK_SKEW_MS", 1000)
API_KEYS_MAX_PER_USER = env_int("API_KEYS_MAX_PER_USER", 20)

SPECTACULAR_SETTINGS = {
    "TITLE": "Exchange API",
    "DESCRIPTION": (
        "REST API of the exchange. Amounts are decimal strings. Errors are JSON "
        '`{"code", "message", "field"}` with a stable `code`.'
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"ApiKeyStatusEnum": "exchange.apikeys.models.ApiKey.Status"},
}

# --- Wallet ------------------------------------------------------------------

# Shared secret of the custody webhook (POST /api/v1/custody/deposits); the
# endpoint answers 503 while it is unset. See docs/LEDGER.md.
CUSTODY_WEBHOOK_SECRET = os.environ.get("CUSTODY_WEBHOOK_SECRET", "")
CUSTODY_WEBHOOK_TOLERANCE_S = 300
# Four eyes on staff money actions (wallet/services/four_eyes.py): crediting,
# adjusting or approving a withdrawal of more than the asset's threshold needs
# a second staff member. Unlisted assets use the default; 0: always two people.
MONEY_FOUR_EYES_THRESHOLDS = env_amounts("MONEY_FOUR_EYES_THRESHOLDS")
MONEY_FOUR_EYES_THRESHOLD_DEFAULT = Decimal(os.environ.get("MONEY_FOUR_EYES_THRESHOLD_DEFAULT") or "0")
# The asset VIP fee tiers measure 30-day volume in.
WALLET_FEE_VOLUME_ASSET = os.environ.get("WALLET_FEE_VOLUME_ASSET", "USDT")

# --- Outbox and event bus (exchange/outbox, docs/EVENTS.md) --------------------

OUTBOX_RELAY_BATCH_SIZE = env_int("OUTBOX_RELAY_BATCH_SIZE", 500)
# How often the relay process looks for new events when it has none (the
# commit -> bus latency of a quiet exchange is about this).
OUTBOX_RELAY_POLL_MS = env_int("OUTBOX_RELAY_POLL_MS", 25)
OUTBOX_MAX_ATTEMPTS = env_int("OUTBOX_MAX_ATTEMPTS", 12)
OUTBOX_BACKOFF_BASE_SECONDS = float(os.environ.get("OUTBOX_BACKOFF_BASE_SECONDS", "1"))
OUTBOX_BACKOFF_MAX_SECONDS = float(os.environ.get("OUTBOX_BACKOFF_MAX_SECONDS", "300"))
OUTBOX_RETENTION_DAYS = float(os.environ.get("OUTBOX_RETENTION_DAYS", "7"))
# Consumers' dedupe records (ProcessedEvent): a redelivery older than this is handled again.
OUTBOX_PROCESSED_RETENTION_DAYS = float(os.environ.get("OUTBOX_PROCESSED_RETENTION_DAYS", "7"))
# A Redis-stream consumer takes over entries another consumer of its group read
# and left unacknowledged for this long (that consumer died).
OUTBOX_CONSUMER_CLAIM_IDLE_MS = env_int("OUTBOX_CONSUMER_CLAIM_IDLE_MS", 60_000)
OUTBOX_REDIS_STREAM_MAXLEN = env_int("OUTBOX_REDIS_STREAM_MAXLEN", 100_000)
OUTBOX_REDIS_STREAM_PREFIX = os.environ.get("OUTBOX_REDIS_STREAM_PREFIX", "bus:")
OUTBOX_KAFKA_TIMEOUT_MS = env_int("OUTBOX_KAFKA_TIMEOUT_MS", 10_000)
OUTBOX_KAFKA_PARTITIONS = env_int("OUTBOX_KAFKA_PARTITIONS", 6)
CELERY_BEAT_SCHEDULE["outbox-prune"] = {
    "task": "exchange.outbox.tasks.outbox_prune",
    "schedule": 24 * 3600.0,
    "options": {"queue": "outbox", "expires": 3600},
}

# --- Audit trail and retention (exchange/audit, docs/AUDIT.md) ---------------

# Secrets (comma-separated, first signs) for the HMAC of the audit chain's head
# and retention checkpoints; unset: derived from SECRET_KEY. See exchange/audit/signing.py.
AUDIT_SIGNING_KEYS = env_list("AUDIT_SIGNING_KEY", [])
AUDIT_CHAIN_BATCH_SIZE = env_int("AUDIT_CHAIN_BATCH_SIZE", 5000)
AUDIT_CHAIN_INTERVAL_S = float(os.environ.get("AUDIT_CHAIN_INTERVAL_S", "1"))
# Days each table keeps its rows (reference 004 §10.3: audit 7 years, orders
# and trades 5); 0 keeps them forever. Legal holds override all of them.
RETENTION_AUDIT_DAYS = env_int("RETENTION_AUDIT_DAYS", 2557)
RETENTION_ORDERS_DAYS = env_int("RETENTION_ORDERS_DAYS", 1827)
RETENTION_TRADES_DAYS = env_int("RETENTION_TRADES_DAYS", 1827)
RETENTION_INTERVAL_S = float(os.environ.get("RETENTION_INTERVAL_S", str(24 * 3600)))
CELERY_IMPORTS.append("exchange.audit.tasks")
CELERY_BEAT_SCHEDULE["audit-chain"] = {
    "task": "exchange.audit.tasks.audit_chain",
    "schedule": AUDIT_CHAIN_INTERVAL_S,
    "options": {"expires": AUDIT_CHAIN_INTERVAL_S * 5},
}
CELERY_BEAT_SCHEDULE["retention-enforce"] = {
    "task": "exchange.audit.tasks.retention_enforce",
    "schedule": RETENTION_INTERVAL_S,
    "options": {"expires": 3600},
}

# --- Risk (risk/, docs/RISK.md) -----------------------------------------------

# How often beat runs the risk event consumer (counters, per-event surveillance)
# and the windowed surveillance rules (velocity, concentration).
RISK_CONSUME_INTERVAL_S = float(os.environ.get("RISK_CONSUME_INTERVAL_S", "1"))
RISK_WINDOWS_INTERVAL_S = float(os.environ.get("RISK_WINDOWS_INTERVAL_S", "60"))
CELERY_BEAT_SCHEDULE["risk-events-consume"] = {
    "task": "risk.tasks.risk_events_consume",
    "schedule": RISK_CONSUME_INTERVAL_S,
    "options": {"queue": "risk", "expires": RISK_CONSUME_INTERVAL_S * 5},
}
CELERY_BEAT_SCHEDULE["risk-surveillance-windows"] = {
    "task": "risk.tasks.risk_surveillance_windows",
    "schedule": RISK_WINDOWS_INTERVAL_S,
    "options": {"queue": "risk", "expires": RISK_WINDOWS_INTERVAL_S},
}
# How often beat looks for reservations no open order backs (risk/counters.py, the reconciler).
RISK_RECONCILE_INTERVAL_S = float(os.environ.get("RISK_RECONCILE_INTERVAL_S", "60"))
CELERY_BEAT_SCHEDULE["risk-reservations-reconcile"] = {
    "task": "risk.tasks.risk_reservations_reconcile",
    "schedule": RISK_RECONCILE_INTERVAL_S,
    "options": {"queue": "risk", "expires": RISK_RECONCILE_INTERVAL_S},
}

# --- Operations --------------------------------------------------------------

EXCHANGE_VERSION = "0.1.0"
# A matcher whose heartbeat is older than this is considered down: order
# placement for its market answers 503 MATCHER_UNAVAILABLE instead of
# accepting orders nobody would sequence.
MATCHER_STALE_AFTER_S = float(os.environ.get("MATCHER_STALE_AFTER_S", "5"))
MATCHER_MAX_CONSECUTIVE_FAILURES = 5
ORDERS_REQUIRE_LIVE_MATCHER = env_bool("ORDERS_REQUIRE_LIVE_MATCHER", True)
EXCHANGE_HOST = os.environ.get("EXCHANGE_HOST", "127.0.0.1")
EXCHANGE_PORT = env_int("EXCHANGE_PORT", 8000)
# Web workers `manage.py up` runs on the one port (exchange/server.py): one per core.
EXCHANGE_WEB_PROCESSES = env_int("EXCHANGE_WEB_PROCESSES", min(4, os.cpu_count() or 1))
EXCHANGE_DEMO = env_bool("EXCHANGE_DEMO", True)
# Whether `manage.py load_demo` may run at all (production: never).
EXCHANGE_DEMO_ALLOWED = True
EXCHANGE_DEMO_PASSWORD = os.environ.get("EXCHANGE_DEMO_PASSWORD") or "demo-exchange-2026"
# Production refuses to serve while an active account has the demo's password (exchange/accounts/passwords.py).
REFUSE_DEFAULT_PASSWORDS = False
# /metrics (Prometheus): open unless a bearer token or client networks are configured (exchange/health.py).
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", [])
# /health shows the error of a failing check (production: never, only its status).
HEALTH_SHOW_ERRORS = True
# `make run` starts the demo market maker (manage.py run_market_maker) with the demo.
EXCHANGE_DEMO_MARKET_MAKER = env_bool("EXCHANGE_DEMO_MARKET_MAKER", True)
HEALTH_CHECK_TIMEOUT_S = 2.0

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "exchange.core.logging.RequestIdFilter"}},
    "formatters": {"json": {"()": "exchange.core.logging.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["request_id"]},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "pgserver": {"level": "WARNING"},
    },
}
