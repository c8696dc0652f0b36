"""``GET /api/v1/risk/limits``: the caller's effective limits, usage and trading state."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from exchange.core.fields import DecimalString, StrictInputSerializer
from exchange.core.schema import NOT_AUTHENTICATED, RATE_LIMITED, error_response
from orders.services import market_for_trading
from risk.models import LIMIT_FIELDS, Scope
from risk.selectors import risk_overview_for_user


class LimitOutput(serializers.Serializer):
    value = DecimalString(help_text="The limit (a count, an amount in the market's base or quote asset, or a fraction "
                                    "for price_band).")
    scope = serializers.ChoiceField(choices=Scope.choices, help_text="Where it is set: the most specific wins.")


LimitsOutput = type("RiskLimitsPerMarket", (serializers.Serializer,), {
    name: LimitOutput(allow_null=True, help_text=help_text) for name, help_text in (
        ("max_open_orders", "Open orders at once, all markets together."),
        ("max_order_quantity", "Base quantity of one order."),
        ("max_order_notional", "Value of one order, in the quote asset."),
        ("max_daily_notional", "Value of the orders placed today (UTC), per quote asset."),
        ("max_daily_orders", "Orders placed today (UTC)."),
        ("max_position", "Net position in the base asset: bought minus sold today, plus what open orders could add."),
        ("max_orders_per_second", "Orders placed in one second."),
        ("price_band", "Limit prices within this fraction of the last trade price (else the mid)."),
    )})
assert set(LimitsOutput._declared_fields) == set(LIMIT_FIELDS)


class MarketLimitsOutput(serializers.Serializer):
    market = serializers.CharField()
    halted = serializers.BooleanField(help_text="The market accepts no orders now.")
    limits = LimitsOutput(help_text="Each limit with its scope, or null when none applies.")


class NotionalOutput(serializers.Serializer):
    asset = serializers.CharField(help_text="Quote asset.")
    value = DecimalString()


class PositionOutput(serializers.Serializer):
    asset = serializers.CharField(help_text="Base asset.")
    net_today = DecimalString(help_text="Bought minus sold today (UTC).")
    open_buy = DecimalString(help_text="What your open buy orders could still buy.")
    open_sell = DecimalString(help_text="What your open sell orders could still sell.")


class UsageOutput(serializers.Serializer):
    open_orders = serializers.IntegerField()
    orders_today = serializers.IntegerField()
    notional_today = NotionalOutput(many=True)
    positions = PositionOutput(many=True)


class RiskOverviewOutput(serializers.Serializer):
    trading_status = serializers.ChoiceField(
        choices=[("ACTIVE", "ACTIVE"), ("CANCEL_ONLY", "CANCEL_ONLY"), ("FROZEN", "FROZEN")],
        help_text="CANCEL_ONLY: only cancels are accepted; FROZEN: nothing is.")
    exchange_halted = serializers.BooleanField()
    kyc_tier = serializers.IntegerField()
    markets = MarketLimitsOutput(many=True)
    usage = UsageOutput()


class RiskLimitsFilter(StrictInputSerializer):
    market = serializers.CharField(required=False, help_text="Only this market's limits.")


class RiskLimitsApi(APIView):
    @extend_schema(
        tags=["Risk"], operation_id="risk_limits", parameters=[RiskLimitsFilter],
        responses={
            200: RiskOverviewOutput,
            400: error_response("A parameter is invalid.", ("UNKNOWN_MARKET", "There is no market 'BTC-EUR'.",
                                                            "market"),
                                ("UNKNOWN_FIELD", "This field is not accepted.", "side")),
            401: NOT_AUTHENTICATED, 429: RATE_LIMITED,
            503: error_response("Redis or the database is down.",
                                ("SERVICE_UNAVAILABLE", "A required service is unavailable; retry later.", None)),
        },
        examples=[OpenApiExample("limits and usage", response_only=True, value={
            "trading_status": "ACTIVE", "exchange_halted": False, "kyc_tier": 1,
            "markets": [{"market": "BTC-USDT", "halted": False, "limits": {
                "max_open_orders": {"value": "200", "scope": "TIER"}, "max_order_quantity": {"value": "5",
                                                                                              "scope": "MARKET"},
                "max_order_notional": {"value": "250000", "scope": "GLOBAL"}, "max_daily_notional": None,
                "max_daily_orders": {"value": "100000", "scope": "GLOBAL"}, "max_position": {"value": "20",
                                                                                              "scope": "MARKET"},
                "max_orders_per_second": {"value": "50", "scope": "GLOBAL"},
                "price_band": {"value": "0.05", "scope": "GLOBAL"}}}],
            "usage": {"open_orders": 3, "orders_today": 41, "notional_today": [{"asset": "USDT", "value": "18250.5"}],
                      "positions": [{"asset": "BTC", "net_today": "0.25", "open_buy": "0.1", "open_sell": "0"}]}})],
        description=(
            "Your effective pre-trade limits per market (each with the scope it comes from: your own, your KYC "
            "tier's, the market's or the global one), what you have used of them, and whether you may trade "
            "(trading_status) — orders that would break a limit are refused with a RISK_* code (docs/RISK.md)."
        ),
    )
    def get(self, request):
        params = RiskLimitsFilter(data=request.query_params)
        params.is_valid(raise_exception=True)
        market = market_for_trading(symbol=params.validated_data["market"]) if "market" in params.validated_data \
            else None
        return Response(RiskOverviewOutput(risk_overview_for_user(user=request.user, market=market)).data)
