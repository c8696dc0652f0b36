"""Public reference data: assets and markets with their trading rules."""

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from exchange.core.fields import DecimalString, QueryInputSerializer
from exchange.core.schema import error_response
from exchange.models import Market
from exchange.selectors import asset_list, market_get, market_list


class AssetOutput(serializers.Serializer):
    code = serializers.CharField()
    name = serializers.CharField()
    precision = serializers.IntegerField(help_text="Decimal places of the smallest unit.")


class MarketOutput(serializers.Serializer):
    symbol = serializers.CharField()
    base = serializers.CharField(source="base.code")
    quote = serializers.CharField(source="quote.code")
    status = serializers.ChoiceField(choices=Market.Status.choices)
    tick_size = DecimalString(help_text="Prices must be multiples of this.")
    step_size = DecimalString(help_text="Quantities must be multiples of this.")
    min_quantity = DecimalString()
    max_quantity = DecimalString()
    min_notional = DecimalString(help_text="Minimum price x quantity, in the quote asset.")
    maker_fee_rate = DecimalString(help_text="Fraction of the received amount charged to the maker.")
    taker_fee_rate = DecimalString(help_text="Fraction of the received amount charged to the taker.")


MARKET_EXAMPLE = OpenApiExample(
    "BTC-USDT",
    value={
        "symbol": "BTC-USDT",
        "base": "BTC",
        "quote": "USDT",
        "status": "TRADING",
        "tick_size": "0.01",
        "step_size": "0.00001",
        "min_quantity": "0.00001",
        "max_quantity": "1000",
        "min_notional": "5",
        "maker_fee_rate": "0.001",
        "taker_fee_rate": "0.001",
    },
    response_only=True,
)


class AssetListApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(
        tags=["Market data"], operation_id="assets_list", responses=AssetOutput(many=True),
        examples=[OpenApiExample("two assets", response_only=True, value=[
            {"code": "BTC", "name": "Bitcoin", "precision": 8}, {"code": "USDT", "name": "Tether USD", "precision": 6}])],
    )
    def get(self, request):
        return Response(AssetOutput(asset_list(), many=True).data)


class MarketListApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    class FilterInput(QueryInputSerializer):
        status = serializers.ChoiceField(choices=Market.Status.choices, required=False)

    @extend_schema(
        tags=["Market data"],
        operation_id="markets_list",
        parameters=[FilterInput],
        responses=MarketOutput(many=True),
        examples=[MARKET_EXAMPLE],
        description="Every market with its trading rules: tick and step sizes, quantity and notional limits, fees.",
    )
    def get(self, request):
        filters = self.FilterInput(data=request.query_params)
        filters.is_valid(raise_exception=True)
        return Response(MarketOutput(market_list(**filters.validated_data), many=True).data)


class MarketDetailApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []

    @extend_schema(
        tags=["Market data"], operation_id="markets_retrieve", examples=[MARKET_EXAMPLE],
        responses={200: MarketOutput, 404: error_response("No market has this symbol.", ("NOT_FOUND", "Not found.", None))},
    )
    def get(self, request, symbol: str):
        return Response(MarketOutput(market_get(symbol=symbol)).data)
