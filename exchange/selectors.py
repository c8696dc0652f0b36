"""Reads of assets and markets (public data: no owner to check)."""

from django.db.models import QuerySet

from exchange.models import Asset, Market


def asset_list() -> QuerySet[Asset]:
    return Asset.objects.order_by("code")


def market_list(*, status: str | None = None) -> QuerySet[Market]:
    markets = Market.objects.select_related("base", "quote").order_by("symbol")
    if status:
        markets = markets.filter(status=status)
    return markets


def market_get(*, symbol: str) -> Market:
    """The market with ``symbol`` (case-insensitive), or Http404."""
    from django.shortcuts import get_object_or_404

    return get_object_or_404(market_list(), symbol=symbol.upper())
