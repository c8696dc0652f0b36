"""The trading API: orders and own trades (private), order book, trades, ticker and klines (public)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from exchange.apikeys.permissions import TRADE
from exchange.core.errors import ApplicationError
from exchange.core.fields import AmountField, DecimalString, StrictCharField, StrictInputSerializer
from exchange.models import Market
from exchange.selectors import market_get
from orders import selectors, services
from orders.models import OrderStatus, OrderType, Side, StpMode, TimeInForce
from orders.rules import OrderRequest

ERROR_RESPONSE = OpenApiResponse(
    description='Error: `{"code": "...", "message": "...", "field": "..."}` with a stable code.',
    examples=[OpenApiExample("insufficient funds", value={
        "code": "INSUFFICIENT_FUNDS", "message": "Not enough USDT available.", "field": "quantity"})],
)


def _market_in_query(symbol: str) -> Market:
    """The market a query or body parameter names: 400 UNKNOWN_MARKET if none (the request is at fault)."""
    return services.market_for_trading(symbol=symbol)


def _market_in_path(symbol: str) -> Market:
    """The market a URL names: 404 UNKNOWN_MARKET if none (there is no such resource)."""
    return _market(symbol, field="symbol", status_code=status.HTTP_404_NOT_FOUND)


def _market(symbol: str, *, field: str, status_code: int) -> Market:
    try:
        return market_get(symbol=symbol)
    except Http404:
        raise ApplicationError("UNKNOWN_MARKET", f"There is no market {symbol[:40]!r}.", field=field,
                               status_code=status_code) from None


class NewestFirstCursor(CursorPagination):
    ordering = "-id"
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000

    def decode_cursor(self, request):
        try:
            return super().decode_cursor(request)
        except NotFound:  # DRF's answer to a cursor it cannot decode; it is bad input, not a missing page
            raise ApplicationError("INVALID_CURSOR", "The cursor is invalid.", field="cursor") from None


class OrderOutput(serializers.Serializer):
    id = serializers.IntegerField()
    client_order_id = serializers.CharField()
    market = serializers.CharField(source="market.symbol")
    side = serializers.CharField()
    type = serializers.CharField()
    time_in_force = serializers.CharField(allow_null=True)
    price = DecimalString(allow_null=True)
    stop_price = DecimalString(allow_null=True)
    quantity = DecimalString(allow_null=True, help_text="Base quantity (null for a market order by quote).")
    quote_quantity = DecimalString(allow_null=True)
    filled_quantity = DecimalString()
    filled_notional = DecimalString(help_text="Quote spent (buy) or received (sell) before fees.")
    average_price = DecimalString(allow_null=True)
    fee_total = DecimalString(help_text="Fees paid, in fee_asset.")
    fee_asset = serializers.SerializerMethodField()
    status = serializers.CharField()
    status_reason = serializers.CharField(help_text="Why the order was rejected, expired or canceled.")
    stp_mode = serializers.CharField()
    cancel_requested = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_fee_asset(self, order) -> str:
        return (order.market.base if order.side == Side.BUY else order.market.quote).code

    def get_cancel_requested(self, order) -> bool:
        return order.cancel_requested_at is not None


ORDER_EXAMPLE = OpenApiExample(
    "a resting limit buy",
    value={
        "id": 1042, "client_order_id": "bot-7-000123", "market": "BTC-USDT", "side": "BUY", "type": "LIMIT",
        "time_in_force": "GTC", "price": "64000", "stop_price": None, "quantity": "0.25", "quote_quantity": None,
        "filled_quantity": "0.1", "filled_notional": "6400", "average_price": "64000", "fee_total": "0.0001",
        "fee_asset": "BTC", "status": "PARTIALLY_FILLED", "status_reason": "", "stp_mode": "EXPIRE_TAKER",
        "cancel_requested": False, "created_at": "2026-11-23T10:00:00.000000Z", "updated_at": "2026-11-23T10:00:00.120000Z",
    },
    response_only=True,
)


class OrderPlaceInput(StrictInputSerializer):
    market = StrictCharField(max_length=40, help_text="Symbol, e.g. BTC-USDT (case-insensitive).")
    side = serializers.ChoiceField(choices=Side.choices)
    type = serializers.ChoiceField(choices=OrderType.choices)
    quantity = AmountField(required=False, help_text="Base quantity; a multiple of the market's step size.")
    quote_quantity = AmountField(required=False, help_text="MARKET/STOP_LOSS/TAKE_PROFIT only: quote amount to spend or receive.")
    price = AmountField(required=False, help_text="Limit price; a multiple of the tick size.")
    stop_price = AmountField(required=False, help_text="Trigger price of stop types (the market's last trade price).")
    time_in_force = serializers.ChoiceField(choices=TimeInForce.choices, required=False)
    stp_mode = serializers.ChoiceField(choices=StpMode.choices, required=False,
                                       help_text="Self-trade prevention; the market's default when absent.")
    client_order_id = StrictCharField(
        required=False, max_length=64, trim_whitespace=False,  # " a" is refused, not silently made "a"
        help_text="Your id, 1-64 of A-Z a-z 0-9 . _ : -; a repeat returns the first order (idempotency).")


class OrderListFilter(StrictInputSerializer):
    market = serializers.CharField(required=False)
    status = serializers.ChoiceField(choices=[("OPEN", "any open status"), *OrderStatus.choices], required=False)
    side = serializers.ChoiceField(choices=Side.choices, required=False)
    start_time = serializers.DateTimeField(required=False)
    end_time = serializers.DateTimeField(required=False)
    cursor = serializers.CharField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000)


class OrderCollectionApi(APIView):
    """POST places, GET lists, DELETE ?market= cancels all."""

    api_key_permission = {"POST": TRADE, "DELETE": TRADE}  # GET needs read

    def initial(self, request, *args, **kwargs):
        # The "orders" rate limits placing and cancelling, not reading one's orders.
        self.throttle_scope = "orders" if request.method in ("POST", "DELETE") else None
        super().initial(request, *args, **kwargs)

    @extend_schema(
        tags=["Orders"],
        operation_id="orders_create",
        request=OrderPlaceInput,
        responses={201: OrderOutput, 200: OrderOutput, 400: ERROR_RESPONSE, 409: ERROR_RESPONSE, 503: ERROR_RESPONSE},
        examples=[
            OpenApiExample("limit buy", request_only=True, value={
                "market": "BTC-USDT", "side": "BUY", "type": "LIMIT", "price": "64000", "quantity": "0.25",
                "time_in_force": "GTC", "client_order_id": "bot-7-000123"}),
            OpenApiExample("market buy for 100 USDT", request_only=True, value={
                "market": "BTC-USDT", "side": "BUY", "type": "MARKET", "quote_quantity": "100"}),
            OpenApiExample("stop-loss limit sell", request_only=True, value={
                "market": "BTC-USDT", "side": "SELL", "type": "STOP_LOSS_LIMIT", "stop_price": "60000",
                "price": "59900", "quantity": "0.25"}),
            ORDER_EXAMPLE,
        ],
        description=(
            "Validates against the market's rules, holds the funds and accepts the order as PENDING; the market's "
            "matcher sequences it within milliseconds (follow it with GET /orders/{id} or the user.orders "
            "WebSocket channel). 201 for a new order, 200 with the original order when client_order_id repeats an "
            "earlier identical request."
        ),
    )
    def post(self, request):
        data = OrderPlaceInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        symbol = fields.pop("market")
        order, created = services.order_place(user=request.user, symbol=symbol, request=OrderRequest(**fields))
        return Response(OrderOutput(order).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        tags=["Orders"],
        operation_id="orders_list",
        parameters=[OrderListFilter],
        responses={200: OrderOutput(many=True)},
        description="Your orders, newest first, with cursor pagination (`next`/`previous` links).",
    )
    def get(self, request):
        filters = OrderListFilter(data=request.query_params)
        filters.is_valid(raise_exception=True)
        params = filters.validated_data
        market = _market_in_query(params["market"]) if params.get("market") else None
        orders = selectors.orders_for_user(
            user=request.user, market=market, status=params.get("status"), side=params.get("side"),
            start=params.get("start_time"), end=params.get("end_time"))
        paginator = NewestFirstCursor()
        page = paginator.paginate_queryset(orders, request, view=self)
        return paginator.get_paginated_response(OrderOutput(page, many=True).data)

    class CancelAllInput(StrictInputSerializer):
        market = serializers.CharField()

    class CancelAllOutput(serializers.Serializer):
        market = serializers.CharField()
        orders_to_cancel = serializers.IntegerField()

    @extend_schema(
        tags=["Orders"],
        operation_id="orders_cancel_all",
        parameters=[CancelAllInput],
        responses={202: CancelAllOutput, 400: ERROR_RESPONSE, 409: ERROR_RESPONSE},
        description="Requests the cancel of every open order of yours in the market (202: the matcher applies it).",
    )
    def delete(self, request):
        data = self.CancelAllInput(data=request.query_params)
        data.is_valid(raise_exception=True)
        count = services.orders_cancel_all(user=request.user, symbol=data.validated_data["market"])
        return Response({"market": data.validated_data["market"].upper(), "orders_to_cancel": count},
                        status=status.HTTP_202_ACCEPTED)


class OrderAmendInput(StrictInputSerializer):
    price = AmountField(required=False)
    quantity = AmountField(required=False, help_text="New TOTAL quantity, including what already filled.")


class AmendmentOutput(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    new_price = DecimalString(allow_null=True)
    new_quantity = DecimalString(allow_null=True)
    reject_reason = serializers.CharField()


class OrderDetailApi(APIView):
    api_key_permission = {"DELETE": TRADE, "PATCH": TRADE}  # GET needs read

    def initial(self, request, *args, **kwargs):
        self.throttle_scope = "orders" if request.method in ("DELETE", "PATCH") else None
        super().initial(request, *args, **kwargs)

    @extend_schema(tags=["Orders"], operation_id="orders_retrieve", responses={200: OrderOutput, 404: ERROR_RESPONSE},
                   examples=[ORDER_EXAMPLE])
    def get(self, request, order_id: int):
        return Response(OrderOutput(selectors.order_get_for_user(user=request.user, order_id=order_id)).data)

    @extend_schema(
        tags=["Orders"], operation_id="orders_cancel", request=None,
        responses={202: OrderOutput, 404: ERROR_RESPONSE, 409: ERROR_RESPONSE},
        description="Requests the cancel (202); the order becomes CANCELED when the matcher applies it, unless it fills first.",
    )
    def delete(self, request, order_id: int):
        order = services.order_cancel(user=request.user, order_id=order_id)
        return Response(OrderOutput(order).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        tags=["Orders"], operation_id="orders_amend", request=OrderAmendInput,
        responses={202: AmendmentOutput, 400: ERROR_RESPONSE, 404: ERROR_RESPONSE, 409: ERROR_RESPONSE},
        examples=[OpenApiExample("reduce quantity (keeps priority)", request_only=True, value={"quantity": "0.2"})],
        description=(
            "Changes a resting LIMIT/LIMIT_MAKER order. Reducing the quantity keeps its place in the queue; a price "
            "change or a larger quantity moves it to the back. Any extra funds are held now."
        ),
    )
    def patch(self, request, order_id: int):
        data = OrderAmendInput(data=request.data)
        data.is_valid(raise_exception=True)
        amendment = services.order_amend(
            user=request.user, order_id=order_id,
            price=data.validated_data.get("price"), quantity=data.validated_data.get("quantity"))
        return Response(AmendmentOutput(amendment).data, status=status.HTTP_202_ACCEPTED)


class TradeOutput(serializers.Serializer):
    id = serializers.IntegerField(source="sequence", help_text="Unique per market.")
    market = serializers.CharField(source="market.symbol")
    price = DecimalString()
    quantity = DecimalString()
    quote_quantity = DecimalString(source="notional")
    taker_side = serializers.CharField()
    executed_at = serializers.DateTimeField()


class MyTradeOutput(TradeOutput):
    order_id = serializers.SerializerMethodField()
    side = serializers.SerializerMethodField()
    role = serializers.SerializerMethodField()
    fee = serializers.SerializerMethodField()
    fee_asset = serializers.SerializerMethodField()

    def _is_taker(self, trade) -> bool:
        return trade.taker_user_id == self.context["user"].pk

    def get_order_id(self, trade) -> int:
        return trade.taker_order_id if self._is_taker(trade) else trade.maker_order_id

    def get_side(self, trade) -> str:
        taker = self._is_taker(trade)
        return trade.taker_side if taker else (Side.SELL if trade.taker_side == Side.BUY else Side.BUY)

    def get_role(self, trade) -> str:
        return "TAKER" if self._is_taker(trade) else "MAKER"

    def get_fee(self, trade) -> str:
        return DecimalString().to_representation(trade.taker_fee if self._is_taker(trade) else trade.maker_fee)

    def get_fee_asset(self, trade) -> str:
        return (trade.market.base if self.get_side(trade) == Side.BUY else trade.market.quote).code


class MyTradesFilter(StrictInputSerializer):
    market = serializers.CharField(required=False)
    start_time = serializers.DateTimeField(required=False)
    end_time = serializers.DateTimeField(required=False)
    cursor = serializers.CharField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000)


class MyTradesApi(APIView):
    @extend_schema(tags=["Orders"], operation_id="trades_my", parameters=[MyTradesFilter],
                   responses={200: MyTradeOutput(many=True)},
                   description="Your fills (as maker or taker), newest first, cursor pagination. A self-trade appears once.")
    def get(self, request):
        filters = MyTradesFilter(data=request.query_params)
        filters.is_valid(raise_exception=True)
        params = filters.validated_data
        market = _market_in_query(params["market"]) if params.get("market") else None
        trades = selectors.trades_for_user(user=request.user, market=market, start=params.get("start_time"),
                                           end=params.get("end_time"))
        paginator = NewestFirstCursor()
        page = paginator.paginate_queryset(trades, request, view=self)
        return paginator.get_paginated_response(MyTradeOutput(page, many=True, context={"user": request.user}).data)


# ------------------------------------------------------------------ public


class PublicApi(APIView):
    permission_classes = [AllowAny]
    authentication_classes: list = []


class OrderbookOutput(serializers.Serializer):
    symbol = serializers.CharField()
    sequence = serializers.IntegerField(help_text="The market's event sequence this snapshot reflects.")
    bids = serializers.ListField(child=serializers.ListField(child=serializers.CharField()),
                                 help_text="[price, quantity] best first.")
    asks = serializers.ListField(child=serializers.ListField(child=serializers.CharField()))


class OrderbookApi(PublicApi):
    class Params(StrictInputSerializer):
        depth = serializers.IntegerField(required=False, min_value=1, max_value=100, default=20)

    @extend_schema(
        tags=["Market data"], operation_id="orderbook", parameters=[Params], responses=OrderbookOutput,
        examples=[OpenApiExample("depth 2", response_only=True, value={
            "symbol": "BTC-USDT", "sequence": 120455, "bids": [["64000", "1.2"], ["63999.5", "0.4"]],
            "asks": [["64000.5", "0.8"], ["64001", "2"]]})],
    )
    def get(self, request, symbol: str):
        params = self.Params(data=request.query_params)
        params.is_valid(raise_exception=True)
        book = selectors.orderbook(market=_market_in_path(symbol), depth=params.validated_data["depth"])
        return Response({key: book[key] for key in ("symbol", "sequence", "bids", "asks")})


class PublicTradesApi(PublicApi):
    class Params(StrictInputSerializer):
        market = serializers.CharField()
        limit = serializers.IntegerField(required=False, min_value=1, max_value=1000, default=100)

    @extend_schema(tags=["Market data"], operation_id="trades_recent", parameters=[Params],
                   responses=TradeOutput(many=True), description="The market's latest trades, newest first.")
    def get(self, request):
        params = self.Params(data=request.query_params)
        params.is_valid(raise_exception=True)
        market = _market_in_query(params.validated_data["market"])
        trades = selectors.trades_recent(market=market, limit=params.validated_data["limit"])
        for trade in trades:
            trade.market = market
        return Response(TradeOutput(trades, many=True).data)


class TickerOutput(serializers.Serializer):
    symbol = serializers.CharField()
    open = DecimalString(allow_null=True)
    high = DecimalString(allow_null=True)
    low = DecimalString(allow_null=True)
    last = DecimalString(allow_null=True)
    volume = DecimalString(help_text="Base traded in the window.")
    quote_volume = DecimalString()
    trade_count = serializers.IntegerField()
    change = DecimalString(allow_null=True)
    change_percent = DecimalString(allow_null=True)
    window_start = serializers.DateTimeField()
    window_end = serializers.DateTimeField()


class TickerApi(PublicApi):
    @extend_schema(tags=["Market data"], operation_id="ticker", responses=TickerOutput,
                   description="Rolling 24-hour statistics (to the minute).")
    def get(self, request, symbol: str):
        return Response(TickerOutput(selectors.ticker(market=_market_in_path(symbol))).data)


class KlineOutput(serializers.Serializer):
    open_time = serializers.DateTimeField()
    close_time = serializers.DateTimeField()
    open = DecimalString()
    high = DecimalString()
    low = DecimalString()
    close = DecimalString()
    volume = DecimalString()
    quote_volume = DecimalString()
    trade_count = serializers.IntegerField()


class KlinesApi(PublicApi):
    class Params(StrictInputSerializer):
        interval = serializers.ChoiceField(choices=list(selectors.KLINE_INTERVALS))
        start_time = serializers.DateTimeField(required=False)
        end_time = serializers.DateTimeField(required=False)
        limit = serializers.IntegerField(required=False, min_value=1, max_value=1000, default=500)

    @extend_schema(tags=["Market data"], operation_id="klines", parameters=[Params], responses=KlineOutput(many=True),
                   description="OHLCV candles from trades, oldest first; intervals 1m to 1d. Minutes without trades have no candle.")
    def get(self, request, symbol: str):
        params = self.Params(data=request.query_params)
        params.is_valid(raise_exception=True)
        p = params.validated_data
        candles = selectors.klines(market=_market_in_path(symbol), interval=p["interval"],
                                   start=p.get("start_time"), end=p.get("end_time"), limit=p["limit"])
        return Response(KlineOutput(candles, many=True).data)

