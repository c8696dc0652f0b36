"""The JSON shape of a balance, built from plain values without DRF.

``wallet.api.views.BalanceOutput`` declares it for the OpenAPI schema and
renders through ``balance_representation``; the live publisher
(exchange/live/publish.py) renders ``user.balances`` with it too. Tests prove
the serializer's declared fields give the same output.
"""

from __future__ import annotations

from decimal import Decimal

from exchange.core.fields import decimal_to_str


def balance_representation(asset: str, available: Decimal, held: Decimal) -> dict:
    """An item of GET /api/v1/balances: ``total`` is available + held."""
    return {
        "asset": asset,
        "available": decimal_to_str(available),
        "held": decimal_to_str(held),
        "total": decimal_to_str(available + held),
    }
