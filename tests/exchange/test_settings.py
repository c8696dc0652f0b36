"""Production settings refuse to run without real configuration and pass check --deploy."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]


def _manage(*args, **env_overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SECRET_KEY", "DEBUG", "ALLOWED_HOSTS", "API_KEY_ENCRYPTION_KEY", "AUDIT_SIGNING_KEY")}
    env["DJANGO_SETTINGS_MODULE"] = "exchange.settings.production"
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_production_refuses_to_start_without_a_secret_key():
    """No SECRET_KEY in the environment: production settings refuse to load."""
    result = _manage("check", ALLOWED_HOSTS="exchange.example.com")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_refuses_a_weak_secret_key():
    """A short SECRET_KEY is refused."""
    result = _manage("check", SECRET_KEY="short", ALLOWED_HOSTS="exchange.example.com")
    assert result.returncode != 0
    assert "at least 50 characters" in result.stderr


def test_production_check_deploy_is_clean():
    """With real configuration, Django's deployment checklist reports nothing."""
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING",
        SECRET_KEY=secrets.token_urlsafe(64), ALLOWED_HOSTS="exchange.example.com",
        API_KEY_ENCRYPTION_KEY=Fernet.generate_key().decode(), AUDIT_SIGNING_KEY=secrets.token_hex(32),
        METRICS_TOKEN=secrets.token_urlsafe(32),
    )
    assert result.returncode == 0, result.stderr + result.stdout


def test_production_refuses_to_start_without_an_audit_signing_key():
    """The audit chain's head and checkpoints must be signed with a key of their own, long enough."""
    base = dict(SECRET_KEY=secrets.token_urlsafe(64), ALLOWED_HOSTS="exchange.example.com",
                API_KEY_ENCRYPTION_KEY=Fernet.generate_key().decode())
    missing = _manage("check", **base)
    short = _manage("check", **base, AUDIT_SIGNING_KEY="too-short")
    assert missing.returncode != 0 and "AUDIT_SIGNING_KEY must be set" in missing.stderr
    assert short.returncode != 0 and "at least 32 characters" in short.stderr


def test_production_refuses_to_start_without_an_api_key_encryption_key():
    """API key secrets must not fall back to a SECRET_KEY-derived key in production."""
    result = _manage("check", SECRET_KEY=secrets.token_urlsafe(64), ALLOWED_HOSTS="exchange.example.com")
    assert result.returncode != 0
    assert "API_KEY_ENCRYPTION_KEY must be set" in result.stderr


def test_production_check_refuses_a_malformed_api_key_encryption_key():
    """A value that is not a Fernet key fails manage.py check (exchange.E002) instead of the first request."""
    result = _manage(
        "check", SECRET_KEY=secrets.token_urlsafe(64), ALLOWED_HOSTS="exchange.example.com",
        API_KEY_ENCRYPTION_KEY="not-a-fernet-key", AUDIT_SIGNING_KEY=secrets.token_hex(32),
    )
    assert result.returncode != 0
    assert "exchange.E002" in result.stderr + result.stdout


def test_each_process_names_itself_to_postgresql():
    from exchange.core.config import process_role

    assert process_role(["/srv/exchange/exchange/server.py", "--worker-fd", "3"]) == "exchange:web"
    assert process_role(["/srv/venv/lib/python3.11/site-packages/celery/__main__.py", "-A", "exchange"]) == \
        "exchange:celery"
    assert process_role(["/srv/exchange/manage.py", "run_matcher", "BTC-USDT"]) == "exchange:run_matcher"
    assert process_role([]) == "exchange"
