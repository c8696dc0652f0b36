"""Reads of orders, trades and market data.

Private reads take the user and return only that user's rows: an order of
someone else is "not found", never "forbidden", so ids reveal nothing.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone
from decimal import Decimal

import redis
from django.db import connection
from django.db.models import Max, Min, Q, QuerySet, Sum
from django.utils import timezone

from exchange.core.errors import ApplicationError
from exchange.core.fields import decimal_to_str
from exchange.core.redis import get_redis
from exchange.models import Market
from matching import stream
from matching.models import MarketState
from orders.models import OPEN_STATUSES, Candle, Order, Trade

KLINE_INTERVALS = {
    "1m": timedelta(minutes=1),
    "3m": timedelta(minutes=3),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "30m": timedelta(minutes=30),
    "1h": timedelta(hours=1),
    "2h": timedelta(hours=2),
    "4h": timedelta(hours=4),
    "6h": timedelta(hours=6),
    "12h": timedelta(hours=12),
    "1d": timedelta(days=1),
}


def order_get_for_user(*, user, order_id: int) -> Order:
    order = Order.objects.select_related("market__base", "market__quote").filter(pk=order_id, user=user).first()
    if order is None:
        raise ApplicationError("ORDER_NOT_FOUND", "No such order.", status_code=404)
    return order


def orders_for_user(
    *, user, market: Market | None = None, status: str | None = None, side: str | None = None,
    start: datetime | None = None, end: datetime | None = None,
) -> QuerySet[Order]:
    orders = Order.objects.filter(user=user).select_related("market__base", "market__quote")
    if market is not None:
        orders = orders.filter(market=market)
    if status == "OPEN":
        orders = orders.filter(status__in=OPEN_STATUSES)
    elif status:
        orders = orders.filter(status=status)
    if side:
        orders = orders.filter(side=side)
    if start:
        orders = orders.filter(created_at__gte=start)
    if end:
        orders = orders.filter(created_at__lt=end)
    return orders


def trades_for_user(*, user, market: Market | None = None, start: datetime | None = None,
                    end: datetime | None = None) -> QuerySet[Trade]:
    trades = Trade.objects.filter(Q(maker_user=user) | Q(taker_user=user)).select_related("market__base", "market__quote")
    if market is not None:
        trades = trades.filter(market=market)
    if start:
        trades = trades.filter(executed_at__gte=start)
    if end:
        trades = trades.filter(executed_at__lt=end)
    return trades


def trades_recent(*, market: Market, limit: int) -> list[Trade]:
    return list(Trade.objects.filter(market=market).order_by("-sequence")[:limit])


def orderbook(*, market: Market, depth: int) -> dict:
    """Aggregated depth: the matcher's snapshot in Redis, or the database when
    Redis has none (after a flush, before the matcher's first batch)."""
    try:
        raw = get_redis().get(stream.depth_key(market.symbol))
    except redis.RedisError:
        raw = None
    if raw:
        snapshot = json.loads(raw)
        return {
            "symbol": market.symbol,
            "sequence": snapshot["sequence"],
            "bids": snapshot["bids"][:depth],
            "asks": snapshot["asks"][:depth],
            "source": "matcher",
        }
    return _orderbook_from_database(market=market, depth=depth)


def _orderbook_from_database(*, market: Market, depth: int) -> dict:
    sequence = MarketState.objects.filter(market=market).values_list("last_sequence", flat=True).first() or 0
    resting = Order.objects.filter(market=market, status__in=["NEW", "PARTIALLY_FILLED"])

    def side(side_name: str, ordering: str):
        rows = (
            resting.filter(side=side_name)
            .values("price")
            .annotate(open_quantity=Sum("quantity") - Sum("filled_quantity"))
            .order_by(ordering)[:depth]
        )
        return [[decimal_to_str(row["price"]), decimal_to_str(row["open_quantity"])] for row in rows]

    return {"symbol": market.symbol, "sequence": sequence, "bids": side("BUY", "-price"), "asks": side("SELL", "price"),
            "source": "database"}


def ticker(*, market: Market, now: datetime | None = None) -> dict:
    """24-hour statistics from one-minute candles (a rolling window to the minute)."""
    now = now or timezone.now()
    since = (now - timedelta(hours=24)).replace(second=0, microsecond=0)
    candles = Candle.objects.filter(market=market, opened_at__gte=since)
    aggregate = candles.aggregate(volume=Sum("volume"), quote_volume=Sum("quote_volume"), trades=Sum("trade_count"),
                                  high=Max("high"), low=Min("low"))
    first = candles.order_by("opened_at").values_list("open", flat=True).first()
    last = MarketState.objects.filter(market=market).values_list("last_price", flat=True).first()
    change = (last - first) if (last is not None and first is not None) else None
    return {
        "symbol": market.symbol,
        "open": first,
        "high": aggregate["high"],
        "low": aggregate["low"],
        "last": last,
        "volume": aggregate["volume"] or Decimal(0),
        "quote_volume": aggregate["quote_volume"] or Decimal(0),
        "trade_count": aggregate["trades"] or 0,
        "change": change,
        "change_percent": (change / first * 100).quantize(Decimal("0.01")) if change is not None and first else None,
        "window_start": since,
        "window_end": now,
    }


def klines(*, market: Market, interval: str, start: datetime | None, end: datetime | None, limit: int) -> list[dict]:
    """Candles of ``interval`` built from one-minute candles, oldest first.

    The range read is never longer than ``limit`` intervals: with ``start``,
    the ``limit`` intervals from it (up to ``end``); without, the ``limit``
    intervals up to ``end`` (default now). So no request makes the database
    aggregate more than ``limit`` intervals of one-minute candles."""
    step = KLINE_INTERVALS[interval]
    end = end or timezone.now()
    if start is None:
        try:
            start = end - step * limit
        except OverflowError:  # an end_time near year 1: everything before it
            start = datetime.min.replace(tzinfo=dt_timezone.utc)
    else:
        try:
            end = min(end, start + step * limit)
        except OverflowError:  # a start_time near year 9999: everything after it
            pass
    table = Candle._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            SELECT date_bin(%s, opened_at, TIMESTAMPTZ '1970-01-01') AS bucket,
                   (array_agg(open ORDER BY opened_at))[1],
                   max(high), min(low),
                   (array_agg(close ORDER BY opened_at DESC))[1],
                   sum(volume), sum(quote_volume), sum(trade_count)
            FROM {table}
            WHERE market_id = %s AND opened_at >= %s AND opened_at < %s
            GROUP BY bucket ORDER BY bucket DESC LIMIT %s
            """,
            [step, market.pk, start, end, limit],
        )
        rows = cursor.fetchall()
    return [
        {"open_time": bucket, "close_time": bucket + step, "open": o, "high": h, "low": low, "close": c,
         "volume": v, "quote_volume": qv, "trade_count": n}
        for bucket, o, h, low, c, v, qv, n in reversed(rows)
    ]



VOLUME_CACHE_S = 600


def trading_volume_30d(*, user, asset_code: str) -> Decimal:
    """What ``user`` traded in the last 30 days, in quote ``asset_code`` (markets
    quoted in it), as maker or taker. Cached for ten minutes: fee tiers move
    slowly and placement must stay fast."""
    from django.core.cache import cache

    key = f"volume30d:{user.pk}:{asset_code}"
    cached = cache.get(key)
    if cached is not None:
        return Decimal(cached)
    since = timezone.now() - timedelta(days=30)
    # Trades with someone else only: a trade in which the user was both maker
    # and taker (self-trade prevention NONE) would buy a fee tier with wash volume.
    volume = (
        Trade.objects.filter(market__quote__code=asset_code, executed_at__gte=since)
        .filter((Q(maker_user=user) & ~Q(taker_user=user)) | (Q(taker_user=user) & ~Q(maker_user=user)))
        .aggregate(total=Sum("notional"))["total"]
        or Decimal(0)
    )
    cache.set(key, str(volume), VOLUME_CACHE_S)
    return volume
