"""The trading page: one Django template, plain JavaScript and CSS (no build step).

The page itself carries only what it needs to draw its first frame (the
markets, the chosen symbol, the branding and whether a session is signed
in); the JavaScript (exchange/static/trading/app.js) loads everything else
through the public REST API and the WebSocket protocol of docs/API.md.
"""

from __future__ import annotations

from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.csrf import ensure_csrf_cookie
from django.views.decorators.http import require_safe

from exchange.selectors import market_get, market_list


def _market_row(market) -> dict:
    return {
        "symbol": market.symbol,
        "base": market.base.code,
        "quote": market.quote.code,
        "status": market.status,
        "tick_size": str(market.tick_size.normalize()),
        "step_size": str(market.step_size.normalize()),
        "min_quantity": str(market.min_quantity.normalize()),
        "min_notional": str(market.min_notional.normalize()),
    }


@require_safe
@ensure_csrf_cookie
def trading_page(request, symbol: str | None = None):
    markets = list(market_list())
    if symbol is None:
        chosen = next((m for m in markets if m.status == "TRADING"), markets[0] if markets else None)
    else:
        try:
            chosen = market_get(symbol=symbol)
        except Http404:
            return redirect("trading-home")
        if chosen.symbol != symbol:
            return redirect("trading-market", symbol=chosen.symbol)
    user = request.user if request.user.is_authenticated else None
    config = {
        "markets": [_market_row(m) for m in markets],
        "symbol": chosen.symbol if chosen else None,
        "user": {"id": user.id, "username": user.username} if user else None,
        "api": "/api/v1",
        "ws_path": "/ws/",
    }
    return render(request, "trading/index.html", {"config": config, "market": chosen})
