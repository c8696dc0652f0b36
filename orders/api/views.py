"""The trading API: orders and own trades (private), order book, trades, ticker and klines (public)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from exchange.apikeys.permissions import TRADE
from exchange.audit.services import audit_context
from exchange.core.pagination import StrictCursorPagination
from exchange.core.errors import ApplicationError
from exchange.core.fields import AmountField, DecimalString, StrictCharField, StrictInputSerializer
from exchange.core.schema import NOT_AUTHENTICATED, RATE_LIMITED, error_response
from exchange.models import Market
from exchange.selectors import market_get
from orders import selectors, services
from orders.models import OrderStatus, OrderType, Side, StpMode, TimeInForce
from orders.representations import (
    attributes,
    my_trade_representation,
    order_representation,
    ticker_representation,
    trade_representation,
)
from orders.rules import OrderRequest
from risk.api.schema import RISK_AMEND_CONFLICT, RISK_CONFLICT, RISK_FORBIDDEN, RISK_INVALID_ORDER, RISK_RATE

# Error responses (the body is always {"code", "message", "field"}; see exchange/core/errors.py).
INVALID_ORDER = error_response(
    "The request breaks a rule: malformed JSON, a field of the wrong type or unknown, or a market rule.",
    ("INVALID_TICK_SIZE", "price must be a multiple of 0.01.", "price"),
    ("INSUFFICIENT_FUNDS", "Insufficient USDT: 16000 needed, 120 available.", None),
    ("UNKNOWN_MARKET", "There is no market 'BTC-EUR'.", "market"),
    ("UNKNOWN_FIELD", "This field is not accepted.", "status"),
    ("MALFORMED_REQUEST", "The request body is not valid JSON: Expecting value: line 1 column 1 (char 0)", None),
    *RISK_INVALID_ORDER,
)
NOT_JSON = error_response(
    "The body is not sent as application/json.",
    ("UNSUPPORTED_MEDIA_TYPE", 'Unsupported media type "text/plain" in request.', None),
)
INVALID_INPUT = error_response(
    "A parameter is invalid.",
    ("INVALID_CHOICE", '"open" is not a valid choice.', "status"),
    ("UNKNOWN_MARKET", "There is no market 'BTC-EUR'.", "market"),
    ("INVALID_CURSOR", "The cursor is invalid.", "cursor"),
)
KEY_NEEDS_TRADE = error_response(
    "The API key lacks the trade permission.",
    ("API_KEY_PERMISSION_DENIED", "This API key lacks the 'trade' permission.", None),
)
TRADE_FORBIDDEN = error_response(
    "The API key lacks the trade permission, or a kill switch stops your account (docs/RISK.md).",
    ("API_KEY_PERMISSION_DENIED", "This API key lacks the 'trade' permission.", None),
    *RISK_FORBIDDEN,
)
PLACE_CONFLICT = error_response(
    "The order cannot be accepted in the market's or the order's current state.",
    ("CLIENT_ORDER_ID_REUSED", "client_order_id was already used for a different order.", "client_order_id"),
    ("MARKET_HALTED", "The market is halted: no orders are accepted.", "market"),
    ("NO_REFERENCE_PRICE", "The market has no trade or opposite order to price this market order; use a limit order "
                           "or quote_quantity.", "type"),
    *RISK_CONFLICT,
)
ORDER_CONFLICT = error_response(
    "The order is not in a state that allows this.",
    ("ORDER_NOT_OPEN", "The order is already FILLED.", None),
    ("ORDER_NOT_RESTING", "Only orders resting in the book can be amended; this one is PENDING.", None),
    ("MARKET_HALTED", "The market is halted: cancels resume with trading.", None),
    *RISK_AMEND_CONFLICT,
)
UNAVAILABLE = error_response(
    "The market's matching engine or a dependency is down: nothing was written; retry after Retry-After.",
    ("MATCHER_UNAVAILABLE", "The matching engine for BTC-USDT is not running; retry shortly.", None),
    ("SERVICE_UNAVAILABLE", "A required service is unavailable; retry later.", None),
)
ORDER_NOT_FOUND = error_response(
    "You have no order with this id (another user's order is not found either).",
    ("ORDER_NOT_FOUND", "No such order.", None),
)
UNKNOWN_MARKET = error_response("No market has this symbol.", ("UNKNOWN_MARKET", "There is no market 'BTC-EUR'.", "symbol"))
PRIVATE_ERRORS = {401: NOT_AUTHENTICATED, 429: RATE_LIMITED}
ORDER_RATE_LIMITED = error_response(
    "Too many requests (Retry-After says when to retry), or more orders in one second than your risk limit.",
    ("RATE_LIMITED", "Request was throttled. Expected available in 1 second.", None),
    *RISK_RATE,
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


class NewestFirstCursor(StrictCursorPagination):
    page_size = 100
    max_page_size = 1000


def _page_schema(output_class, name: str):
    """The schema of a page of ``output_class``: {next, previous, results}."""
    return type(name, (serializers.Serializer,), {
        "next": serializers.URLField(allow_null=True, help_text="The next (older) page, or null."),
        "previous": serializers.URLField(allow_null=True, help_text="The previous (newer) page, or null."),
        "results": output_class(many=True),
    })


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

    def to_representation(self, order):
        # The fields above declare the shape (OpenAPI); orders/representations.py renders it,
        # for REST and the live layer alike (tests prove both agree).
        market = order.market
        return order_representation(attributes(order), symbol=market.symbol, base_code=market.base.code,
                                    quote_code=market.quote.code)


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
        responses={201: OrderOutput, 200: OrderOutput, 400: INVALID_ORDER, 403: TRADE_FORBIDDEN, 409: PLACE_CONFLICT,
                   415: NOT_JSON, 503: UNAVAILABLE, **PRIVATE_ERRORS, 429: ORDER_RATE_LIMITED},
        examples=[
            OpenApiExample("limit buy", request_only=True, value={
                "market": "BTC-USDT", "side": "BUY", "type": "LIMIT", "price": "64000", "quantity": "0.25",
                "time_in_force": "GTC", "client_order_id": "bot-7-000123"}),
            OpenApiExample("post-only sell", request_only=True, value={
                "market": "BTC-USDT", "side": "SELL", "type": "LIMIT_MAKER", "price": "65000", "quantity": "0.1"}),
            OpenApiExample("market buy for 100 USDT", request_only=True, value={
                "market": "BTC-USDT", "side": "BUY", "type": "MARKET", "quote_quantity": "100"}),
            OpenApiExample("market sell of 0.5 BTC", request_only=True, value={
                "market": "BTC-USDT", "side": "SELL", "type": "MARKET", "quantity": "0.5"}),
            OpenApiExample("stop-loss limit sell", request_only=True, value={
                "market": "BTC-USDT", "side": "SELL", "type": "STOP_LOSS_LIMIT", "stop_price": "60000",
                "price": "59900", "quantity": "0.25"}),
            OpenApiExample("take-profit market sell", request_only=True, value={
                "market": "BTC-USDT", "side": "SELL", "type": "TAKE_PROFIT", "stop_price": "70000", "quantity": "0.25"}),
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
        order, created = services.order_place(user=request.user, symbol=symbol, request=OrderRequest(**fields),
                                              audit=audit_context(request))
        return Response(OrderOutput(order).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    @extend_schema(
        tags=["Orders"],
        operation_id="orders_list",
        parameters=[OrderListFilter],
        responses={200: _page_schema(OrderOutput, "OrderPage"), 400: INVALID_INPUT, **PRIVATE_ERRORS},
        examples=[OpenApiExample("a page", response_only=True, value={
            "next": "https://exchange.example/api/v1/orders?cursor=cD0xMDQy&limit=1", "previous": None,
            "results": [ORDER_EXAMPLE.value]})],
        description=(
            "Your orders, newest first, with cursor pagination: follow `next` (null on the last page); `limit` "
            "sets the page size (default 100, at most 1000). `status=OPEN` means PENDING, UNTRIGGERED, NEW or "
            "PARTIALLY_FILLED; `start_time` is inclusive and `end_time` exclusive, on the creation time."
        ),
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
        responses={202: CancelAllOutput, 400: INVALID_INPUT, 403: TRADE_FORBIDDEN, 409: ORDER_CONFLICT,
                   **PRIVATE_ERRORS},
        examples=[OpenApiExample("three to cancel", response_only=True, status_codes=["202"],
                                 value={"market": "BTC-USDT", "orders_to_cancel": 3})],
        description=(
            "Requests the cancel of every open order of yours in the market (202: the matcher applies it, in "
            "sequence with matching; an order may still fill before). Other users' orders are never touched."
        ),
    )
    def delete(self, request):
        data = self.CancelAllInput(data=request.query_params)
        data.is_valid(raise_exception=True)
        count = services.orders_cancel_all(user=request.user, symbol=data.validated_data["market"],
                                           audit=audit_context(request))
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

    @extend_schema(tags=["Orders"], operation_id="orders_retrieve",
                   responses={200: OrderOutput, 404: ORDER_NOT_FOUND, **PRIVATE_ERRORS}, examples=[ORDER_EXAMPLE])
    def get(self, request, order_id: int):
        return Response(OrderOutput(selectors.order_get_for_user(user=request.user, order_id=order_id)).data)

    @extend_schema(
        tags=["Orders"], operation_id="orders_cancel", request=None,
        responses={202: OrderOutput, 403: KEY_NEEDS_TRADE, 404: ORDER_NOT_FOUND, 409: ORDER_CONFLICT, **PRIVATE_ERRORS},
        examples=[OpenApiExample("cancel requested", response_only=True, status_codes=["202"], value={
            **ORDER_EXAMPLE.value, "status": "NEW", "filled_quantity": "0", "filled_notional": "0",
            "average_price": None, "fee_total": "0", "cancel_requested": True})],
        description="Requests the cancel (202); the order becomes CANCELED when the matcher applies it, unless it fills first.",
    )
    def delete(self, request, order_id: int):
        order = services.order_cancel(user=request.user, order_id=order_id, audit=audit_context(request))
        return Response(OrderOutput(order).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        tags=["Orders"], operation_id="orders_amend", request=OrderAmendInput,
        responses={202: AmendmentOutput, 400: INVALID_ORDER, 403: TRADE_FORBIDDEN, 404: ORDER_NOT_FOUND,
                   409: ORDER_CONFLICT, 415: NOT_JSON, 503: UNAVAILABLE, **PRIVATE_ERRORS},
        examples=[
            OpenApiExample("reduce quantity (keeps priority)", request_only=True, value={"quantity": "0.2"}),
            OpenApiExample("new price", request_only=True, value={"price": "63900"}),
            OpenApiExample("amendment requested", response_only=True, status_codes=["202"], value={
                "id": 77, "status": "REQUESTED", "new_price": None, "new_quantity": "0.2", "reject_reason": ""}),
        ],
        description=(
            "Changes a resting (NEW or PARTIALLY_FILLED) LIMIT/LIMIT_MAKER order; 202: the matcher applies it in "
            "sequence (follow GET /orders/{id}). Reducing the quantity keeps its place in the queue; a price "
            "change or a larger quantity moves it to the back. `quantity` is the new total, and must exceed what "
            "already filled. Any extra funds are held now."
        ),
    )
    def patch(self, request, order_id: int):
        data = OrderAmendInput(data=request.data)
        data.is_valid(raise_exception=True)
        amendment = services.order_amend(
            user=request.user, order_id=order_id,
            price=data.validated_data.get("price"), quantity=data.validated_data.get("quantity"),
            audit=audit_context(request))
        return Response(AmendmentOutput(amendment).data, status=status.HTTP_202_ACCEPTED)


class TradeOutput(serializers.Serializer):
    id = serializers.IntegerField(source="sequence", help_text="Unique per market.")
    market = serializers.CharField(source="market.symbol")
    price = DecimalString()
    quantity = DecimalString()
    quote_quantity = DecimalString(source="notional")
    taker_side = serializers.CharField()
    executed_at = serializers.DateTimeField()

    def to_representation(self, trade):
        # Declared above, rendered by orders/representations.py (as OrderOutput).
        return trade_representation(attributes(trade), symbol=trade.market.symbol)


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

    def to_representation(self, trade):
        market = trade.market
        return my_trade_representation(attributes(trade), user_id=self.context["user"].pk, symbol=market.symbol,
                                       base_code=market.base.code, quote_code=market.quote.code)


class MyTradesFilter(StrictInputSerializer):
    market = serializers.CharField(required=False)
    start_time = serializers.DateTimeField(required=False)
    end_time = serializers.DateTimeField(required=False)
    cursor = serializers.CharField(required=False)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=1000)


class MyTradesApi(APIView):
    @extend_schema(
        tags=["Orders"], operation_id="trades_my", parameters=[MyTradesFilter],
        responses={200: _page_schema(MyTradeOutput, "MyTradePage"), 400: INVALID_INPUT, **PRIVATE_ERRORS},
        examples=[OpenApiExample("a page", response_only=True, value={"next": None, "previous": None, "results": [{
            "id": 120451, "market": "BTC-USDT", "price": "64000", "quantity": "0.1", "quote_quantity": "6400",
            "taker_side": "SELL", "executed_at": "2026-11-23T10:00:00.120000Z", "order_id": 1042, "side": "BUY",
            "role": "MAKER", "fee": "0.0001", "fee_asset": "BTC"}]})],
        description=(
            "Your fills (as maker or taker), newest first, cursor pagination as for /orders. `side` and `role` are "
            "yours; `fee` is what you paid, in `fee_asset` (the asset you received). A self-trade appears once."
        ),
    )
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
        tags=["Market data"], operation_id="orderbook", parameters=[Params],
        responses={200: OrderbookOutput, 400: INVALID_INPUT, 404: UNKNOWN_MARKET},
        description=(
            "Aggregated depth, best price first, as of the matcher's last applied event (`sequence`); from the "
            "database when the matcher has published none."
        ),
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

    @extend_schema(
        tags=["Market data"], operation_id="trades_recent", parameters=[Params],
        responses={200: TradeOutput(many=True), 400: INVALID_INPUT},
        examples=[OpenApiExample("one trade", response_only=True, value=[{
            "id": 120451, "market": "BTC-USDT", "price": "64000", "quantity": "0.1", "quote_quantity": "6400",
            "taker_side": "SELL", "executed_at": "2026-11-23T10:00:00.120000Z"}])],
        description="The market's latest trades, newest first (`limit`, default 100, at most 1000).",
    )
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

    def to_representation(self, ticker):
        return ticker_representation(ticker)  # declared above, rendered by orders/representations.py


class TickerApi(PublicApi):
    @extend_schema(
        tags=["Market data"], operation_id="ticker", responses={200: TickerOutput, 404: UNKNOWN_MARKET},
        examples=[OpenApiExample("BTC-USDT", response_only=True, value={
            "symbol": "BTC-USDT", "open": "63000", "high": "64500", "low": "62800", "last": "64000",
            "volume": "12.5", "quote_volume": "795000", "trade_count": 431, "change": "1000",
            "change_percent": "1.59", "window_start": "2026-11-22T10:00:00Z",
            "window_end": "2026-11-23T10:00:30.500000Z"})],
        description=(
            "Rolling 24-hour statistics (to the minute). `last` is the last trade price ever; the others are null "
            "or zero when nothing traded in the window."
        ),
    )
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

    @extend_schema(
        tags=["Market data"], operation_id="klines", parameters=[Params],
        responses={200: KlineOutput(many=True), 400: INVALID_INPUT, 404: UNKNOWN_MARKET},
        examples=[OpenApiExample("one 1h candle", response_only=True, value=[{
            "open_time": "2026-11-23T10:00:00Z", "close_time": "2026-11-23T11:00:00Z", "open": "63900",
            "high": "64100", "low": "63850", "close": "64000", "volume": "1.25", "quote_volume": "79950",
            "trade_count": 37}])],
        description=(
            "OHLCV candles from trades, oldest first; intervals 1m to 1d, aligned to the Unix epoch (UTC). "
            "Intervals without trades have no candle. With `start_time`, the `limit` intervals from it (up to "
            "`end_time`); without, the last `limit` intervals up to `end_time` (default now)."
        ),
    )
    def get(self, request, symbol: str):
        params = self.Params(data=request.query_params)
        params.is_valid(raise_exception=True)
        p = params.validated_data
        candles = selectors.klines(market=_market_in_path(symbol), interval=p["interval"],
                                   start=p.get("start_time"), end=p.get("end_time"), limit=p["limit"])
        return Response(KlineOutput(candles, many=True).data)

