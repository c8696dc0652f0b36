"""Production keeps the demo out (its users have a published password), /metrics can be restricted,
/health does not show exception text there, and `check --deploy` says when autovacuum is kept from the
order path's tables."""

import io
import os
import secrets
import subprocess
import sys

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command
from django.db import connection
from rest_framework.test import APIClient

from exchange.accounts.passwords import DEMO_PASSWORD_DEFAULT, default_passwords_check
from exchange.core.vacuum import autovacuum_check, autovacuum_problems
from exchange.demo import demo_load
from exchange.server import refuse_default_passwords
from tests.exchange.test_settings import ROOT

PRODUCTION = dict(SECRET_KEY=secrets.token_urlsafe(64), ALLOWED_HOSTS="exchange.example.com",
                  API_KEY_ENCRYPTION_KEY=Fernet.generate_key().decode(), AUDIT_SIGNING_KEY=secrets.token_hex(32),
                  METRICS_TOKEN=secrets.token_urlsafe(32))


def manage(*args, **env_overrides) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_DEMO")}
    env.update(DJANGO_SETTINGS_MODULE="exchange.settings.production", **PRODUCTION, **env_overrides)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_production_refuses_the_demo_and_a_demo_password():
    demo_on = manage("check", EXCHANGE_DEMO="1")
    demo_password = manage("check", EXCHANGE_DEMO_PASSWORD="anything-at-all-123")
    load = manage("load_demo")

    assert demo_on.returncode != 0 and "EXCHANGE_DEMO must be off in production" in demo_on.stderr
    assert demo_password.returncode != 0 and "EXCHANGE_DEMO_PASSWORD must not be set" in demo_password.stderr
    assert load.returncode != 0 and "The demo cannot be loaded" in load.stderr


@pytest.mark.django_db
def test_the_server_and_check_refuse_accounts_with_the_demo_password(settings):
    """exchange.server's production start and `check --deploy --database default` (exchange.E010) name the
    accounts; once their passwords are changed, both pass."""
    from django.contrib.auth import get_user_model

    settings.REFUSE_DEFAULT_PASSWORDS = True
    demo_load(password=DEMO_PASSWORD_DEFAULT)

    with pytest.raises(SystemExit) as refused:
        refuse_default_passwords()
    [error] = default_passwords_check(databases=["default"])

    assert "operator" in str(refused.value) and "alice" in str(refused.value)
    assert error.id == "exchange.E010" and "compliance" in error.msg
    for user in get_user_model().objects.all():
        user.set_password(secrets.token_urlsafe(16))
        user.save()
    refuse_default_passwords()
    assert default_passwords_check(databases=["default"]) == []


@pytest.mark.django_db
def test_nobody_may_choose_the_demo_password():
    response = APIClient().post("/api/v1/auth/register", {"username": "dave", "email": "dave@example.com",
                                                          "password": DEMO_PASSWORD_DEFAULT}, format="json")
    assert (response.status_code, response.json()["code"]) == (400, "PASSWORD_DEFAULT")


@pytest.mark.django_db
def test_metrics_open_by_default_restricted_by_token_or_network(client, settings):
    assert client.get("/metrics").status_code == 200

    settings.METRICS_TOKEN = "scrape-token-0123456789"
    settings.METRICS_ALLOWED_NETWORKS = ["10.1.0.0/16"]
    refused = client.get("/metrics", REMOTE_ADDR="192.0.2.1")
    assert (refused.status_code, refused.json()["code"]) == (403, "METRICS_FORBIDDEN")
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong", REMOTE_ADDR="192.0.2.1").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-token-0123456789",
                      REMOTE_ADDR="192.0.2.1").status_code == 200
    allowed = client.get("/metrics", REMOTE_ADDR="10.1.2.3")
    assert allowed.status_code == 200 and b"exchange_outbox_backlog" in allowed.content


@pytest.mark.django_db
@pytest.mark.parametrize("show", [True, False])
def test_health_shows_exception_text_only_outside_production(client, settings, redis_down, show):
    settings.HEALTH_SHOW_ERRORS = show

    redis = client.get("/health").json()["checks"]["redis"]

    assert redis["status"] == "unhealthy"
    assert ("error" in redis) == show


@pytest.mark.django_db
def test_check_deploy_names_the_order_path_tables_kept_from_autovacuum():
    """exchange.W013: a table of the order path with autovacuum_enabled off is named, however the option
    was spelled; other tables are not its concern; reset, the table is no longer named."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('autovacuum') = 'off'")
        [server_off] = cursor.fetchone()
        cursor.execute("ALTER TABLE orders_order SET (autovacuum_enabled = off)")
        cursor.execute("ALTER TABLE wallet_account SET (autovacuum_enabled = FALSE, fillfactor = 90)")
        cursor.execute("ALTER TABLE django_session SET (autovacuum_enabled = false)")
    output = io.StringIO()
    call_command("check", "--deploy", "--database", "default", "--tag", "database", stdout=output, stderr=output)
    [warning] = autovacuum_check(databases=["default"])

    assert "exchange.W013" in output.getvalue()
    assert warning.id == "exchange.W013"
    assert "autovacuum_enabled is off for orders_order, wallet_account." in warning.msg
    assert "django_session" not in warning.msg
    assert ("autovacuum is off on the server" in warning.msg) == server_off
    assert autovacuum_check(databases=None) == []  # without --database, no query

    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE orders_order RESET (autovacuum_enabled)")
        cursor.execute("ALTER TABLE wallet_account RESET (autovacuum_enabled)")
    assert not any("autovacuum_enabled" in problem for problem in autovacuum_problems())
