"""Helpers for end-to-end tests that run the exchange as real processes."""

from __future__ import annotations

import http.cookiejar
import json
import os
import re
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def env_without_service_urls(**overrides) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(overrides)
    return env


def wait_for(predicate, *, timeout_s: float, interval_s: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(interval_s)


def get_json(url: str, timeout: float = 5) -> tuple[int, dict | list]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def url_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def totp_code(base32_key: str) -> str:
    """The code an authenticator app shows now for ``base32_key`` (as the enrollment page prints it)."""
    from base64 import b32decode

    from django_otp.oath import totp

    key = base32_key.replace(" ", "")
    return f"{totp(b32decode(key + '=' * (-len(key) % 8))):06d}"


def admin_login(base_url: str, username: str, password: str, otp_key: str | None = None) -> str:
    """Log in through the admin's login form (with the code of ``otp_key``, a base32 authenticator key, once the
    staff member has one; without, enrolling an authenticator as a first sign-in does); return the index HTML."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def post(path: str, page: str, fields: dict) -> str:
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = urllib.parse.urlencode({"csrfmiddlewaretoken": token, **fields}).encode()
        request = urllib.request.Request(f"{base_url}{path}", data=form, headers={"Referer": base_url})
        return opener.open(request, timeout=10).read().decode()

    page = opener.open(f"{base_url}/admin/login/?next=/admin/", timeout=10).read().decode()
    fields = {"username": username, "password": password, "next": "/admin/"}
    if otp_key:
        fields["otp_token"] = totp_code(otp_key)
    page = post("/admin/login/?next=/admin/", page, fields)
    enrollment = re.search(r'data-testid="otp-key">([A-Z2-7 ]+)<', page)
    if enrollment:
        page = post("/admin/two-factor/", page, {"otp_token": totp_code(enrollment.group(1))})
    return page


def child_env(**overrides) -> dict:
    """Environment for child processes that use the test run's database and Redis.

    The test database is the one pytest-django created; children must not
    start embedded servers of their own, so both URLs are set explicitly.
    """
    from django.conf import settings

    from exchange.core.config import database_url

    env = env_without_service_urls(
        DATABASE_URL=database_url(settings.DATABASES["default"]),
        REDIS_URL=settings.REDIS_URL,
        DJANGO_SETTINGS_MODULE="exchange.settings.base",
        EXCHANGE_DATA_DIR=str(settings.DATA_DIR),
        EXCHANGE_DEMO="0",
        LOG_LEVEL="WARNING",
    )
    env.update(overrides)
    return env



class Stack:
    """Real processes of the exchange (the web server, the matchers' supervisor...) on
    the test database; every process is stopped by ``stop()``."""

    def __init__(self, **env_overrides):
        self.env = child_env(**env_overrides)
        self.children = []
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"

    def spawn(self, name: str, *args: str):
        import sys

        from exchange import processes

        child = processes.spawn(name, [sys.executable, *args], env=self.env, cwd=ROOT)
        self.children.append(child)
        return child

    def start_web(self):
        return self.spawn("web", "-m", "exchange.server", "--host", "127.0.0.1", "--port", str(self.port),
                          "--workers", "2")

    def start_matchers(self):
        return self.spawn("matchers", "manage.py", "run_matchers")

    def wait_ready(self, symbols=(), timeout_s: float = 60):
        from matching.stream import matcher_alive

        wait_for(lambda: url_ok(f"{self.base_url}/health/ready"), timeout_s=timeout_s, what="the web server")
        for symbol in symbols:
            wait_for(lambda: matcher_alive(symbol), timeout_s=timeout_s, what=f"the {symbol} matcher")

    def stop(self):
        from exchange import processes

        processes.stop(self.children)
        self.children = []


class SignedHttp:
    """A bot's HTTP client: every request signed with an API key (docs/API.md)."""

    def __init__(self, base_url: str, key_id: str, secret: str):
        self.base_url = base_url
        self.key_id = key_id
        self.secret = secret

    def request(self, method: str, path: str, *, query: dict | None = None, json_body=None) -> tuple[int, object]:
        from exchange.apikeys.signing import signed_headers

        body = json.dumps(json_body).encode() if json_body is not None else b""
        query_string = urllib.parse.urlencode(query or {})
        headers = signed_headers(self.key_id, self.secret, method, path, query_string, body)
        headers["Content-Type"] = "application/json"
        url = f"{self.base_url}{path}" + (f"?{query_string}" if query_string else "")
        request = urllib.request.Request(url, data=body or None, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")


@contextmanager
def running_stack(symbols=("BTC-USDT", "ETH-USDT"), **env_overrides):
    """The web server and the matchers of ``symbols`` as real processes, ready; stopped on exit."""
    running = Stack(**env_overrides)
    running.start_web()
    running.start_matchers()
    try:
        running.wait_ready(symbols=symbols)
        yield running
    finally:
        running.stop()
