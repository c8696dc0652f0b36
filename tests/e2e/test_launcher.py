"""`make run` (manage.py up): the stack comes up, serves, stops cleanly, and keeps its data."""

import shutil
import signal
import subprocess
import sys
import tempfile
import time

import psutil
import pytest

from exchange.management.commands.up import HEALTHY_RUN_S
from tests.e2e.harness import ROOT, admin_login, env_without_service_urls, free_port, get_json, url_ok, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def data_dir():
    path = tempfile.mkdtemp(prefix="exu-", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _start(data_dir: str, port: int, *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "up", "--port", str(port), *options],
        cwd=ROOT,
        env=env_without_service_urls(EXCHANGE_DATA_DIR=data_dir, EXCHANGE_DEMO_PASSWORD="launcher-test-pw"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _processes_of_run(launcher: subprocess.Popen, data_dir: str) -> set[int]:
    """The launcher's descendants and any server process using the data folder."""
    pids = {child.pid for child in psutil.Process(launcher.pid).children(recursive=True)}
    for process in psutil.process_iter(["pid", "cmdline"]):
        if any(data_dir in part for part in process.info["cmdline"] or []):
            pids.add(process.info["pid"])
    pids.discard(launcher.pid)
    return pids


def _stop_with_ctrl_c(launcher: subprocess.Popen) -> str:
    launcher.send_signal(signal.SIGINT)
    output, _ = launcher.communicate(timeout=60)
    return output


def test_up_serves_stops_cleanly_and_keeps_data(data_dir):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    launcher = _start(data_dir, port)
    try:
        wait_for(lambda: url_ok(f"{base}/health/ready"), timeout_s=120, what="the exchange to be ready")

        status, report = get_json(f"{base}/health")
        assert status == 200
        assert report["checks"]["database"]["status"] == report["checks"]["redis"]["status"] == "healthy"
        _, markets = get_json(f"{base}/api/v1/markets")
        assert {"BTC-USDT", "ETH-USDT"} <= {market["symbol"] for market in markets}
        index = admin_login(base, "operator", "launcher-test-pw")
        assert "Log out" in index and "Markets" in index
        assert url_ok(f"{base}/"), "the trading page"

        # The demo market maker starts with the demo and quotes both sides of every market.
        def quoted():
            books = [get_json(f"{base}/api/v1/orderbook/{symbol}")[1] for symbol in ("BTC-USDT", "ETH-USDT")]
            return all(book["bids"] and book["asks"] for book in books)

        wait_for(quoted, timeout_s=60, what="the demo market maker's quotes")

        # A separate process attaches to the running servers and writes data.
        write = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "from exchange.models import Asset; Asset.objects.create(code='MARK', name='Marker', precision=2);"
             "from exchange.core.redis import get_redis; get_redis().set('marker', 'kept')"],
            cwd=ROOT, env=env_without_service_urls(EXCHANGE_DATA_DIR=data_dir), capture_output=True, text=True, timeout=60,
        )
        assert write.returncode == 0, write.stderr
        assert url_ok(f"{base}/health/ready"), "the attached process must not stop the run's servers"
        # The demo's deposits wrote balance events; the run's outbox relay publishes them to the Redis bus.
        def relayed():
            probe = subprocess.run(
                [sys.executable, "manage.py", "shell", "-c",
                 "from exchange.outbox import metrics; from exchange.core.redis import get_redis;"
                 "backlog = metrics.snapshot()['backlog'];"
                 "print('relayed', sum(backlog.values()), get_redis().xlen('bus:balance.events'))"],
                cwd=ROOT, env=env_without_service_urls(EXCHANGE_DATA_DIR=data_dir), capture_output=True, text=True,
                timeout=60,
            )
            waiting, streamed = (int(n) for n in probe.stdout.split("relayed", 1)[1].split())
            return waiting == 0 and streamed > 0

        wait_for(relayed, timeout_s=30, interval_s=1, what="the outbox to be relayed by the relay process")
        run_processes = _processes_of_run(launcher, data_dir)
        assert len(run_processes) >= 7  # daphne, matchers, outbox relay, celery worker (+pool), beat, market maker...
        assert any("run_market_maker" in " ".join(psutil.Process(pid).cmdline()) for pid in run_processes)
        assert any("run_outbox_relay" in " ".join(psutil.Process(pid).cmdline()) for pid in run_processes)
    finally:
        output = _stop_with_ctrl_c(launcher)

    assert launcher.returncode == 0, output[-3000:]
    assert "Exchange is up" in output and "launcher-test-pw" in output
    assert f"Trading page http://127.0.0.1:{port}/" in output and "market maker: stopped" in output
    leftovers = [pid for pid in run_processes if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"]
    assert leftovers == [], f"processes left behind: {leftovers}"

    launcher = _start(data_dir, port, "--no-market-maker")
    try:
        wait_for(lambda: url_ok(f"{base}/health/ready"), timeout_s=120, what="the second run to be ready")
        ready_at = time.monotonic()  # every child was started before
        assert not any("run_market_maker" in " ".join(p.cmdline()) for p in psutil.Process(launcher.pid).children(
            recursive=True))
        _, assets = get_json(f"{base}/api/v1/assets")
        assert "MARK" in {asset["code"] for asset in assets}
        check = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "from exchange.core.redis import get_redis; print(get_redis().get('marker'))"],
            cwd=ROOT, env=env_without_service_urls(EXCHANGE_DATA_DIR=data_dir), capture_output=True, text=True, timeout=60,
        )
        assert "b'kept'" in check.stdout, check.stderr

        # A child that dies after a healthy run is started again; the exchange stays up.
        def celery_worker():
            for child in psutil.Process(launcher.pid).children():
                try:
                    if "worker" in child.cmdline() and "celery" in " ".join(child.cmdline()):
                        return child
                except psutil.Error:  # the killed one, until the launcher reaps it
                    continue
            return None

        worker = celery_worker()
        time.sleep(max(0.0, HEALTHY_RUN_S - (time.monotonic() - ready_at)) + 0.5)
        worker.send_signal(signal.SIGKILL)
        replaced = wait_for(lambda: (w := celery_worker()) is not None and w.pid != worker.pid and w,
                            timeout_s=30, what="the Celery worker to be started again")
        assert replaced.is_running()
        assert url_ok(f"{base}/health/ready") and launcher.poll() is None
    finally:
        output = _stop_with_ctrl_c(launcher)
        print(output[-3000:])  # shown if the test fails
    assert launcher.returncode == 0, output[-3000:]
    assert "Market maker off" in output
    assert "celery-worker exited with status -9 after" in output and "restarting it" in output
