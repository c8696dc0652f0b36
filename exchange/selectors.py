"""Reads of assets and markets (public data: no owner to check)."""

import re

from django.db.models import QuerySet
from django.http import Http404

from exchange.core.localcache import LocalCache
from exchange.models import Asset, Market

SYMBOL = re.compile(r"[A-Z0-9]{2,16}-[A-Z0-9]{2,16}")  # as Market.symbol's validator


def asset_list() -> QuerySet[Asset]:
    return Asset.objects.order_by("code")


def market_list(*, status: str | None = None) -> QuerySet[Market]:
    markets = Market.objects.select_related("base", "quote").order_by("symbol")
    if status:
        markets = markets.filter(status=status)
    return markets


def market_get(*, symbol: str) -> Market:
    """The market with ``symbol`` (case-insensitive), or Http404.

    A symbol that no market could have (Market.symbol's format) is not looked
    up: PostgreSQL refuses text with a NUL character, so "/orderbook/%00"
    would otherwise be a 500.
    """
    from django.shortcuts import get_object_or_404

    symbol = str(symbol).upper()
    if not SYMBOL.fullmatch(symbol):
        raise Http404("No such market.")
    return get_object_or_404(market_list(), symbol=symbol)


def _market_load(symbol: str) -> Market:
    market = market_list().filter(symbol=symbol).first()
    if market is None:
        raise Http404("No such market.")
    return market


# Markets with their assets, per process, for the order path: dropped on any
# change of a market or an asset (their saves move the shared token, and so
# does a matcher applying a status change; exchange/core/localcache.py).
_markets = LocalCache("markets", _market_load, max_age_s=60.0)


def market_get_cached(*, symbol: str) -> Market:
    """``market_get`` from this process's cache (callers must not modify the market).

    Fresh within ``localcache.CHECK_EVERY_S`` of a change for callers that
    ``localcache.refresh()`` first. Unknown symbols are not cached."""
    symbol = str(symbol).upper()
    if not SYMBOL.fullmatch(symbol):
        raise Http404("No such market.")
    return _markets.get(symbol)


def market_peek(*, symbol: str) -> Market | None:
    """The market from this process's cache only (None: not cached, or no such symbol)."""
    return _markets.peek(str(symbol).upper())
