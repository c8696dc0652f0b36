"""The web server: several uvicorn workers that really share one port.

``python -m exchange.server --host 0.0.0.0 --port 8000 --workers 2`` is what
``make run`` (through ``manage.py up``), the Dockerfile and docker-compose
start. It serves ``exchange.asgi:application`` (HTTP and WebSocket).

Why this shape (docs/BENCHMARKS.md, "Order placement over HTTP"): one
uvicorn worker (uvloop, httptools) per core, each with a listening socket of
its own bound with ``SO_REUSEPORT``, so the kernel spreads new connections
evenly over the workers; several processes accepting on one shared socket
(what ``daphne --fd`` and uvicorn's own ``--workers`` do) let the busiest
process take most connections. The supervisor holds every socket, so a
worker that dies is replaced on the same socket and connections waiting in
its backlog are not lost; SIGTERM or SIGINT stops the workers gracefully.

The client's address is the peer's: uvicorn's proxy-header handling is off,
so X-Forwarded-For counts only through ``NUM_PROXIES``
(``exchange.core.net.client_ip``), never because a client wrote it.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import signal
import socket
import subprocess
import sys
import time

RESTART_BACKOFF_S = 1.0


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve_worker(fd: int) -> None:
    """One worker: uvicorn on the inherited socket ``fd``."""
    import uvicorn

    # The application is loaded before serving, and everything loading it allocated (Django,
    # DRF, the URL map, the models) is moved out of the cyclic collector's reach: otherwise
    # each full collection walks all of it while the worker answers nothing. Measured at
    # 1,000 orders/s: full collections of 130-215 ms, each stalling the requests in flight
    # on that worker (docs/BENCHMARKS.md, "Warm keys, collector pauses, alert storms, row addresses").
    importlib.import_module("exchange.asgi")
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(
        "exchange.asgi:application", loop="uvloop", http="httptools", ws="websockets",
        lifespan="off", proxy_headers=False, server_header=False, access_log=False,
        log_level=os.environ.get("LOG_LEVEL", "info").lower(), timeout_keep_alive=30, backlog=2048,
    )
    # socket(fileno=) reads the family from the descriptor (TCP, so TCP_NODELAY is set on connections).
    uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])


def _spawn(fd: int, index: int) -> subprocess.Popen:
    from exchange.processes import spawn

    return spawn(f"web-{index + 1}", [sys.executable, "-m", "exchange.server", "--worker-fd", str(fd)],
                 pass_fds=(fd,)).popen


def serve(host: str, port: int, workers: int) -> int:
    """Bind ``workers`` sockets to host:port and keep one worker on each until told to stop."""
    # A plain bind first: it fails if anything else listens there, even with SO_REUSEPORT.
    probe = listening_socket(host, port, reuse_port=False)
    probe.close()
    sockets = [listening_socket(host, port, reuse_port=True) for _ in range(workers)]
    children = {index: _spawn(sock.fileno(), index) for index, sock in enumerate(sockets)}
    stopping = False

    def stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        for index, child in list(children.items()):
            if child.poll() is not None and not stopping:
                print(f"web worker {index + 1} exited with status {child.returncode}; restarting", file=sys.stderr)
                time.sleep(RESTART_BACKOFF_S)
                children[index] = _spawn(sockets[index].fileno(), index)
        time.sleep(0.2)
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
    return 0


PRODUCTION_SETTINGS = "exchange.settings.production"


def refuse_default_passwords() -> None:
    """With the production settings, refuse to serve while an active account still has the demo's
    published password (exchange/accounts/passwords.py): the process exits with the usernames."""
    import django
    from django.conf import settings

    django.setup()
    if not settings.REFUSE_DEFAULT_PASSWORDS:
        return
    from exchange.accounts.passwords import default_password_users

    users = default_password_users()
    if users:
        raise SystemExit(f"Refusing to serve: active accounts still have the demo's published password: "
                         f"{', '.join(users)}. Set new passwords (manage.py changepassword USERNAME) or deactivate "
                         "them.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("EXCHANGE_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("EXCHANGE_PORT", "8000")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("EXCHANGE_WEB_PROCESSES") or 0) or None)
    parser.add_argument("--worker-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings.base")
    if args.worker_fd is not None:
        serve_worker(args.worker_fd)
        return 0
    if os.environ["DJANGO_SETTINGS_MODULE"] == PRODUCTION_SETTINGS:
        refuse_default_passwords()
    workers = args.workers or min(4, os.cpu_count() or 1)
    return serve(args.host, args.port, max(1, workers))


if __name__ == "__main__":
    sys.exit(main())
