"""manage.py bench_signin: what the sign-in lockout and the staff second factor cost per request.

The lockout (django-axes) is an authentication backend and signal handlers,
with no middleware: requests that do not sign in should pay nothing for it.
This command measures that, through Django's full request path (the
project's middleware, DRF, the views) with the test client, twice: with the
lockout as configured, and with it removed (``AXES_ENABLED`` off, only
Django's ModelBackend). For each kind of request it reports SQL queries per
request (exact) and CPU microseconds of this process per request (noisy on
a shared machine; compare the two runs of the same line). Throttling is
off while it measures (it would answer some requests 429 without their
work):

- ``anonymous GET /api/v1/markets``
- ``trader session GET /api/v1/balances`` and ``GET /api/v1/auth/me``
- ``staff session GET /api/v1/auth/me`` (the second factor is checked: one
  query more than a trader's, with or without the lockout)
- ``failed POST /api/v1/auth/login`` (each from its own address, so none is
  locked out): what a failed sign-in costs with the lockout's bookkeeping.

Everything runs in one transaction that is rolled back: it leaves nothing
behind in the database it runs against.
"""

from __future__ import annotations

import platform
import time

from django.conf import settings as django_settings
from django.core.management.base import BaseCommand
from django.db import connection, transaction
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext

HOST = "127.0.0.1"  # in the default ALLOWED_HOSTS
WITHOUT_LOCKOUT = {"AXES_ENABLED": False,
                   "AUTHENTICATION_BACKENDS": ["django.contrib.auth.backends.ModelBackend"]}


class _Rollback(Exception):
    pass


class Command(BaseCommand):
    help = "Per-request cost of the sign-in lockout and of the staff second factor."

    def add_arguments(self, parser):
        parser.add_argument("--requests", type=int, default=1000, help="Requests per scenario (default 1000).")
        parser.add_argument("--logins", type=int, default=20,
                            help="Failed sign-ins measured (default 20: each hashes a password, ~0.7 s of CPU).")

    def handle(self, *args, requests: int, logins: int, **options):
        self.stdout.write(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
                          f"requests per line: {requests} ({logins} failed sign-ins)")
        try:
            with transaction.atomic():
                clients = self._clients()
                rates = django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
                unthrottled = {**django_settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": dict.fromkeys(rates, "")}
                for label, settings in (("lockout on", {}), ("lockout off", WITHOUT_LOCKOUT)):
                    with override_settings(REST_FRAMEWORK=unthrottled, **settings):
                        for name, status, call in self._scenarios(clients):
                            count = logins if status == 400 else requests
                            queries, cpu_us = self._measure(call, status, count)
                            self.stdout.write(f"{label:<12} {name:<42} queries={queries:.2f} cpu_us={cpu_us:.0f}")
                raise _Rollback
        except _Rollback:
            pass

    def _clients(self) -> dict:
        from django.contrib.auth import get_user_model
        from django_otp import DEVICE_ID_SESSION_KEY
        from django_otp.plugins.otp_totp.models import TOTPDevice

        User = get_user_model()
        trader = User.objects.create_user(username="bench-signin-trader", password="bench-signin-password-1")
        staff = User.objects.create_user(username="bench-signin-staff", password="bench-signin-password-1",
                                         is_staff=True)
        device = TOTPDevice.objects.create(user=staff, name="bench", confirmed=True)
        trader_client, staff_client = Client(HTTP_HOST=HOST), Client(HTTP_HOST=HOST)
        trader_client.force_login(trader)
        staff_client.force_login(staff)
        session = staff_client.session
        session[DEVICE_ID_SESSION_KEY] = device.persistent_id
        session.save()
        return {"anonymous": Client(HTTP_HOST=HOST), "trader": trader_client, "staff": staff_client}

    def _scenarios(self, clients: dict):
        addresses = iter(range(10**9))

        def failed_login():
            n = next(addresses)
            return clients["anonymous"].post(
                "/api/v1/auth/login", {"username": "bench-signin-trader", "password": "wrong"},
                content_type="application/json", REMOTE_ADDR=f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}")

        return [
            ("anonymous GET /api/v1/markets", 200, lambda: clients["anonymous"].get("/api/v1/markets")),
            ("trader session GET /api/v1/balances", 200, lambda: clients["trader"].get("/api/v1/balances")),
            ("trader session GET /api/v1/auth/me", 200, lambda: clients["trader"].get("/api/v1/auth/me")),
            ("staff session GET /api/v1/auth/me", 200, lambda: clients["staff"].get("/api/v1/auth/me")),
            ("failed POST /api/v1/auth/login", 400, failed_login),
        ]

    def _measure(self, call, status: int, requests: int) -> tuple[float, float]:
        for _ in range(min(5, requests)):  # warm caches and connections
            response = call()
            assert response.status_code == status, response.content
        statuses = set()
        with CaptureQueriesContext(connection) as captured:
            started = time.process_time()
            for _ in range(requests):
                statuses.add(call().status_code)
            cpu = time.process_time() - started
        assert statuses == {status}, statuses
        return len(captured.captured_queries) / requests, cpu / requests * 1e6
