"""The demo market maker: a bot that keeps every TRADING market's book alive.

It is an ordinary API client (signed requests, docs/API.md), so it exercises
the same path as any trader's bot and needs nothing but the base URL and an
API key with ``trade``. Per market it keeps ``levels`` LIMIT_MAKER quotes on
each side of a mid price that follows a random walk pulled back toward a
reference price (the last trade, else the book's middle, else
``REFERENCE_PRICES``). Quotes sit on a grid of ``level_step`` (0.05% of the
reference), so a small move of the mid changes nothing and a larger one
cancels the level that fell off one end and adds one at the other: a few
orders per second in all. Now and then it sends a small IOC order across to
its own best quote, so trades print and the chart moves; those orders use
``stp_mode NONE`` since the counterparty is usually itself (a demo venue's
wash trade, paid for with fees; a user's better-priced order is taken
first).

Every order carries a ``client_order_id`` chosen before the first attempt,
so a retry after a timeout cannot place it twice. 429 and 503 answers and
connection errors are retried with exponential backoff (honouring
``Retry-After``); other refusals are logged and the quote skipped. ``stop()``
(SIGTERM) ends the loop between requests; ``shutdown()`` then cancels the
quotes.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

from exchange.apikeys.signing import signed_headers

logger = logging.getLogger(__name__)

# Where a market with no trade and an empty book starts quoting.
REFERENCE_PRICES = {"BTC-USDT": Decimal("65000"), "ETH-USDT": Decimal("3000")}
OPEN = "OPEN"
RETRYABLE_STATUSES = {429, 502, 503, 504}


class MakerStopped(Exception):
    """The maker was asked to stop while waiting to retry."""


class ApiUnavailable(Exception):
    """The API kept answering 429/503 (or not at all) through every retry."""


class MakerHttp:
    """Signed JSON requests with retries and backoff that a stop request interrupts."""

    def __init__(self, base_url: str, key_id: str, secret: str, *, stop_event: threading.Event,
                 attempts: int = 6, backoff_s: float = 0.25, backoff_max_s: float = 10.0, timeout_s: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.key_id = key_id
        self.secret = secret
        self.stop_event = stop_event
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.timeout_s = timeout_s
        self.requests_sent = 0
        self.retries = 0

    def once(self, method: str, path: str, *, query: dict | None = None, body: dict | None = None,
             timeout_s: float | None = None) -> tuple[int, object, float | None]:
        """One attempt: (status, JSON body, Retry-After seconds); status 0 when unreachable."""
        raw = json.dumps(body).encode() if body is not None else b""
        query_string = urllib.parse.urlencode(query or {})
        headers = signed_headers(self.key_id, self.secret, method, path, query_string, raw)
        headers["Content-Type"] = "application/json"
        url = f"{self.base_url}{path}" + (f"?{query_string}" if query_string else "")
        request = urllib.request.Request(url, data=raw or None, method=method, headers=headers)
        self.requests_sent += 1
        try:
            with urllib.request.urlopen(request, timeout=timeout_s or self.timeout_s) as response:
                return response.status, json.loads(response.read() or b"null"), None
        except urllib.error.HTTPError as error:
            try:
                data = json.loads(error.read() or b"null")
            except ValueError:
                data = None
            retry_after = error.headers.get("Retry-After") if error.headers else None
            try:
                retry_after_s = float(retry_after) if retry_after else None
            except ValueError:
                retry_after_s = None
            return error.code, data, retry_after_s
        except (urllib.error.URLError, OSError, ValueError):
            return 0, None, None

    def call(self, method: str, path: str, **kwargs) -> tuple[int, object]:
        """Retry 429/5xx-unavailable and connection errors with backoff; return the final answer."""
        for attempt in range(self.attempts):
            status, data, retry_after_s = self.once(method, path, **kwargs)
            if status not in RETRYABLE_STATUSES and status != 0:
                return status, data
            if attempt == self.attempts - 1:
                break
            self.retries += 1
            delay = min(self.backoff_max_s, self.backoff_s * (2 ** attempt)) * random.uniform(0.7, 1.3)
            if retry_after_s is not None:
                delay = max(delay, min(retry_after_s, self.backoff_max_s))
            if self.stop_event.wait(delay):
                raise MakerStopped()
        raise ApiUnavailable(f"{method} {path}: the API stayed unavailable (last status {status})")


@dataclass
class MarketQuotes:
    symbol: str
    tick_size: Decimal
    step_size: Decimal
    min_quantity: Decimal
    min_notional: Decimal
    reference: Decimal
    mid: Decimal
    level_step: Decimal
    refusals: dict = field(default_factory=dict)


def quantize_down(value: Decimal, unit: Decimal) -> Decimal:
    return (value / unit).to_integral_value(rounding=ROUND_FLOOR) * unit


def quantize_up(value: Decimal, unit: Decimal) -> Decimal:
    return (value / unit).to_integral_value(rounding=ROUND_CEILING) * unit


def grid_prices(*, mid: Decimal, level_step: Decimal, levels: int) -> tuple[list[Decimal], list[Decimal]]:
    """Bid and ask prices on the grid around ``mid``, best first, never crossed or touching."""
    best_bid = quantize_down(mid, level_step)
    if best_bid >= mid:
        best_bid -= level_step
    best_ask = quantize_up(mid, level_step)
    if best_ask <= mid:
        best_ask += level_step
    bids = [best_bid - i * level_step for i in range(levels)]
    asks = [best_ask + i * level_step for i in range(levels)]
    return [price for price in bids if price > 0], asks


class MarketMaker:
    def __init__(self, http: MakerHttp, *, levels: int = 5, interval_s: float = 1.0, level_notional: Decimal = Decimal(1000),
                 taker_probability: float = 0.2, volatility: float = 0.0003, seed: int | None = None):
        self.http = http
        self.levels = levels
        self.interval_s = interval_s
        self.level_notional = level_notional
        self.taker_probability = taker_probability
        self.volatility = volatility
        self.random = random.Random(seed)
        self.run_id = format(int(time.time() * 1000), "x")
        self.order_counter = 0
        self.markets: dict[str, MarketQuotes] = {}
        self.stats = {"placed": 0, "canceled": 0, "crossed": 0, "refused": 0}
        self._markets_loaded_at = 0.0

    # -- the loop --------------------------------------------------------------------

    def run(self, *, duration_s: float | None = None) -> None:
        stop = self.http.stop_event
        deadline = time.monotonic() + duration_s if duration_s else None
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            try:
                if time.monotonic() - self._markets_loaded_at > 30 or not self.markets:
                    self.load_markets()
                for quotes in list(self.markets.values()):
                    if stop.is_set():
                        break
                    self.tick(quotes)
            except MakerStopped:
                break
            except ApiUnavailable as error:
                logger.warning("market maker: %s; pausing", error)
                stop.wait(5)
            except Exception:  # a demo bot must keep going; the next tick starts afresh
                logger.exception("market maker: unexpected error; pausing")
                stop.wait(5)
            stop.wait(self.interval_s)

    def load_markets(self) -> None:
        status, rows = self.http.call("GET", "/api/v1/markets", query={"status": "TRADING"})
        if status != 200:
            logger.warning("market maker: GET /markets answered %s", status)
            return
        current = {}
        for row in rows:
            symbol = row["symbol"]
            if symbol in self.markets:
                current[symbol] = self.markets[symbol]
                continue
            reference = self.reference_price(symbol)
            if reference is None:
                logger.warning("market maker: no reference price for %s; not quoting it", symbol)
                continue
            tick = Decimal(row["tick_size"])
            level_step = max(tick, quantize_down(reference * Decimal("0.0005"), tick))
            current[symbol] = MarketQuotes(
                symbol=symbol, tick_size=tick, step_size=Decimal(row["step_size"]),
                min_quantity=Decimal(row["min_quantity"]), min_notional=Decimal(row["min_notional"]),
                reference=reference, mid=quantize_down(reference, tick), level_step=level_step,
            )
            logger.info("market maker: quoting %s around %s", symbol, reference)
        self.markets = current
        self._markets_loaded_at = time.monotonic()

    def reference_price(self, symbol: str) -> Decimal | None:
        status, ticker = self.http.call("GET", f"/api/v1/ticker/{symbol}")
        if status == 200 and ticker.get("last"):
            return Decimal(ticker["last"])
        status, book = self.http.call("GET", f"/api/v1/orderbook/{symbol}", query={"depth": 1})
        if status == 200 and book["bids"] and book["asks"]:
            return (Decimal(book["bids"][0][0]) + Decimal(book["asks"][0][0])) / 2
        return REFERENCE_PRICES.get(symbol)

    # -- one market, one step ------------------------------------------------------------

    def walk(self, quotes: MarketQuotes) -> None:
        """Move the mid: a random step, pulled back toward the reference, kept within 5% of it."""
        shock = Decimal(str(round(self.random.gauss(0, self.volatility), 8)))
        pull = (quotes.reference - quotes.mid) * Decimal("0.02")
        mid = quotes.mid * (1 + shock) + pull
        low, high = quotes.reference * Decimal("0.95"), quotes.reference * Decimal("1.05")
        quotes.mid = quantize_down(min(max(mid, low), high), quotes.tick_size)

    def quantity_for(self, quotes: MarketQuotes, price: Decimal) -> Decimal:
        notional = self.level_notional * Decimal(str(round(self.random.uniform(0.4, 1.6), 3)))
        quantity = quantize_down(notional / price, quotes.step_size)
        floor_for_notional = quantize_up(quotes.min_notional / price, quotes.step_size) if price > 0 else quotes.step_size
        return max(quantity, quotes.min_quantity, floor_for_notional)

    def next_client_order_id(self) -> str:
        self.order_counter += 1
        return f"mm-{self.run_id}-{self.order_counter}"

    def tick(self, quotes: MarketQuotes) -> None:
        self.walk(quotes)
        bids, asks = grid_prices(mid=quotes.mid, level_step=quotes.level_step, levels=self.levels)
        wanted = {("BUY", price) for price in bids} | {("SELL", price) for price in asks}

        status, page = self.http.call(
            "GET", "/api/v1/orders", query={"market": quotes.symbol, "status": OPEN, "limit": 200})
        if status != 200:
            logger.warning("market maker: GET /orders for %s answered %s", quotes.symbol, status)
            return
        have = set()
        for order in page["results"]:
            if order["cancel_requested"]:
                continue
            key = (order["side"], Decimal(order["price"])) if order["price"] is not None else None
            if key in wanted and key not in have:
                have.add(key)
            else:
                self.cancel(order["id"])

        for side, prices in (("BUY", bids), ("SELL", asks)):
            for price in prices:
                if (side, price) not in have:
                    self.place(quotes, {
                        "market": quotes.symbol, "side": side, "type": "LIMIT_MAKER", "price": str(price),
                        "quantity": str(self.quantity_for(quotes, price)),
                    })

        if bids and asks and self.random.random() < self.taker_probability:
            side = self.random.choice(("BUY", "SELL"))
            price = asks[0] if side == "BUY" else bids[0]
            quantity = max(quantize_down(self.quantity_for(quotes, price) * Decimal("0.3"), quotes.step_size),
                           quotes.min_quantity, quantize_up(quotes.min_notional / price, quotes.step_size))
            if self.place(quotes, {
                "market": quotes.symbol, "side": side, "type": "LIMIT", "time_in_force": "IOC", "price": str(price),
                "quantity": str(quantity), "stp_mode": "NONE",
            }):
                self.stats["crossed"] += 1

    def place(self, quotes: MarketQuotes, body: dict) -> bool:
        body["client_order_id"] = self.next_client_order_id()
        status, data = self.http.call("POST", "/api/v1/orders", body=body)
        if status in (200, 201):
            self.stats["placed"] += 1
            return True
        self.stats["refused"] += 1
        code = data.get("code") if isinstance(data, dict) else None
        # Log each kind of refusal once per market, not once per tick.
        if quotes.refusals.get(code, 0) == 0:
            logger.warning("market maker: %s refused on %s: %s %s", body["type"], quotes.symbol, status, data)
        quotes.refusals[code] = quotes.refusals.get(code, 0) + 1
        return False

    def cancel(self, order_id: int) -> None:
        status, _ = self.http.call("DELETE", f"/api/v1/orders/{order_id}")
        if status == 202:
            self.stats["canceled"] += 1

    def shutdown(self) -> None:
        """Cancel every quote, one attempt per market, quickly: the stack may be stopping too."""
        for symbol in list(self.markets):
            status, _, _ = self.http.once("DELETE", "/api/v1/orders", query={"market": symbol}, timeout_s=2)
            if status != 202:
                logger.warning("market maker: could not cancel the quotes of %s (status %s)", symbol, status)
