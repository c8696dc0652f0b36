"""Reads of assets and markets (public data: no owner to check)."""

import re

from django.db.models import QuerySet

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
    from django.http import Http404
    from django.shortcuts import get_object_or_404

    symbol = str(symbol).upper()
    if not SYMBOL.fullmatch(symbol):
        raise Http404("No such market.")
    return get_object_or_404(market_list(), symbol=symbol)
