"""``manage.py up`` (what ``make run`` runs): the whole exchange on one machine.

Embedded PostgreSQL and Redis start when this command's settings load (unless
DATABASE_URL / REDIS_URL are set); then it migrates, loads the demo, starts
the web server (``exchange.server``: ``--web-processes`` uvicorn workers for
HTTP, admin and WebSocket, each on its own ``SO_REUSEPORT`` socket of the
port), one matcher per market (under their supervisor), the outbox relay, a
Celery worker and Celery beat, waits until
/health/ready answers, starts the demo market maker (with the demo, unless
--no-market-maker or EXCHANGE_DEMO_MARKET_MAKER=0), prints the URLs and
logins, and runs until Ctrl-C or SIGTERM. It then stops every process it
started (the market maker first, so it can cancel its quotes), and the
embedded servers stop as this process exits. A child of the exchange that
dies after running at least ``HEALTHY_RUN_S`` is started again at once, as
docker-compose's ``restart: unless-stopped`` does (a Celery worker that lost
its broker when Redis restarted exits; the exchange must not go down with
it). One that dies sooner after its start cannot run here: everything stops
and the exit status is 1, since a half-running exchange is worse than a
stopped one. The market maker is only a demo: if it exits, the launcher says
so and the exchange keeps running.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
import urllib.error
import urllib.request

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from exchange import processes
from exchange.demo import DEMO_USERS, demo_load

READY_TIMEOUT_S = 90.0
HEALTHY_RUN_S = 10.0  # a child that ran this long before dying is restarted


class Command(BaseCommand):
    help = ("Run the exchange: services, migrations, demo data, web server, matchers, outbox relay, "
            "Celery worker and beat.")

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.EXCHANGE_HOST)
        parser.add_argument("--port", type=int, default=settings.EXCHANGE_PORT)
        parser.add_argument("--no-demo", action="store_true", help="Do not load the demo data (implies --no-market-maker).")
        parser.add_argument("--no-market-maker", action="store_true", help="Do not start the demo market maker.")
        parser.add_argument("--web-processes", type=int, default=settings.EXCHANGE_WEB_PROCESSES,
                            help="web workers sharing the port (default: EXCHANGE_WEB_PROCESSES or the CPU count, at most 4).")

    def handle(self, *args, host: str, port: int, no_demo: bool, no_market_maker: bool, web_processes: int,
               **options):
        self._stop_requested = False
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)

        self.stdout.write("migrating the database...")
        call_command("migrate", interactive=False, verbosity=0)
        demo = settings.EXCHANGE_DEMO and not no_demo
        if demo:
            demo_load(password=settings.EXCHANGE_DEMO_PASSWORD)

        market_maker = demo and settings.EXCHANGE_DEMO_MARKET_MAKER and not no_market_maker

        self._check_port_free(host, port)
        web = processes.spawn("web", [sys.executable, "-m", "exchange.server", "--host", host, "--port", str(port),
                                      "--workers", str(max(1, web_processes))])
        children = [web] + [processes.spawn(name, argv) for name, argv in self._commands()]
        extras: list[processes.Child] = []
        try:
            base_url = f"http://{host}:{port}"
            self._wait_ready(base_url, children)
            if self._stop_requested:
                return
            if market_maker:
                extras.append(processes.spawn("market-maker", [
                    sys.executable, str(settings.BASE_DIR / "manage.py"), "run_market_maker", "--url", base_url]))
            self._print_banner(base_url, demo, market_maker)
            failed = self._supervise(children, extras)
        finally:
            self.stdout.write("stopping...")
            processes.stop(extras, grace_s=5.0)
            processes.stop(children)
        if failed:
            raise CommandError(f"{failed.name} exited with status {failed.popen.returncode}; stopped everything")
        self.stdout.write("stopped; data kept in %s" % settings.DATA_DIR)

    def _request_stop(self, signum, frame):
        self._stop_requested = True

    @staticmethod
    def _check_port_free(host: str, port: int) -> None:
        """Fail early and clearly when something already listens on the web port."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        probe = socket.socket(family, socket.SOCK_STREAM)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
        finally:
            probe.close()

    def _commands(self) -> list[tuple[str, list[str]]]:
        python = sys.executable
        return [
            (
                "celery-worker",
                [python, "-m", "celery", "-A", "exchange", "worker", "-Q", "default,risk,outbox",
                 "--concurrency", "2", "--loglevel", "WARNING", "--hostname", "worker@%h"],
            ),
            ("matchers", [python, str(settings.BASE_DIR / "manage.py"), "run_matchers"]),
            ("outbox-relay", [python, str(settings.BASE_DIR / "manage.py"), "run_outbox_relay"]),
            (
                "celery-beat",
                [python, "-m", "celery", "-A", "exchange", "beat", "--loglevel", "WARNING",
                 "--schedule", str(settings.DATA_DIR / "celerybeat-schedule")],
            ),
        ]

    def _wait_ready(self, base_url: str, children: list[processes.Child]) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not self._stop_requested:
            dead = next((child for child in children if not child.alive()), None)
            if dead:
                raise CommandError(f"{dead.name} exited with status {dead.popen.returncode} while starting")
            try:
                with urllib.request.urlopen(f"{base_url}/health/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise CommandError(f"the exchange did not become ready within {READY_TIMEOUT_S:.0f}s")
            time.sleep(0.2)

    def _supervise(self, children: list[processes.Child], extras: list[processes.Child]) -> processes.Child | None:
        """Until a stop is requested: restart a child that died after a healthy run (in
        place in ``children``); return one that died sooner after its start."""
        while not self._stop_requested:
            for index, child in enumerate(children):
                if not child.alive():
                    ran_s = time.monotonic() - child.started_at
                    if ran_s < HEALTHY_RUN_S:
                        return child
                    self.stderr.write(f"{child.name} exited with status {child.popen.returncode} after "
                                      f"{ran_s:.0f}s; restarting it")
                    children[index] = processes.spawn(child.name, child.argv)
            for extra in list(extras):
                if not extra.alive():
                    self.stderr.write(f"{extra.name} exited with status {extra.popen.returncode}; the exchange keeps running")
                    extras.remove(extra)
            time.sleep(0.5)
        return None

    def _print_banner(self, base_url: str, demo: bool, market_maker: bool) -> None:
        lines = [
            "",
            "Exchange is up",
            f"  Trading page {base_url}/",
            f"  Markets API  {base_url}/api/v1/markets",
            f"  API docs     {base_url}/api/docs/",
            f"  Admin        {base_url}/admin/",
            f"  Health       {base_url}/health",
            f"  Metrics      {base_url}/metrics",
        ]
        if demo:
            lines.append(f"  Demo logins (password {settings.EXCHANGE_DEMO_PASSWORD!r}, set when first created):")
            lines.extend(f"    {user.username:<11} {user.role}" for user in DEMO_USERS)
            lines.append("  Market maker " + (
                "quoting every market (stop it: --no-market-maker or EXCHANGE_DEMO_MARKET_MAKER=0)"
                if market_maker else "off"))
        lines.extend([f"  Data         {settings.DATA_DIR}", "  Stop with Ctrl-C", ""])
        self.stdout.write("\n".join(lines))
        self.stdout.flush()
