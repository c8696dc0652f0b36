"""REST and live render orders, trades, balances and the ticker with one module
(orders/representations.py, wallet/representations.py). The serializers'
declared fields are the documented contract (OpenAPI); these tests prove that
rendering the same rows with those fields (DRF's own ``Serializer.to_representation``)
gives exactly what the representation functions give, on real rows written by
the matcher and on hand-made edge cases (18-decimal assets, None fields, market
orders, self-trades, an empty ticker)."""

from __future__ import annotations

import datetime
from decimal import Decimal as D

import pytest
from rest_framework import serializers

from exchange.models import Asset, Market
from orders.api.views import MyTradeOutput, OrderOutput, TickerOutput, TradeOutput
from orders.models import Order, Trade
from orders.representations import (
    attributes,
    my_trade_representation,
    order_representation,
    ticker_representation,
    trade_representation,
)
from wallet.api.views import BalanceOutput
from wallet.representations import balance_representation
from wallet.selectors import Balance

from tests.matching.conftest import drain, market, matcher, place, traders  # noqa: F401 - fixtures


def declared(serializer, obj) -> dict:
    """What the serializer's declared fields render (DRF's field-by-field path,
    not the serializer's own to_representation)."""
    return dict(serializers.Serializer.to_representation(serializer, obj))


def check_order(order: Order) -> dict:
    market = order.market
    expected = declared(OrderOutput(), order)
    assert order_representation(attributes(order), symbol=market.symbol, base_code=market.base.code,
                                quote_code=market.quote.code) == expected
    assert OrderOutput(order).data == expected  # what REST sends
    return expected


def check_trade(trade: Trade, user_ids) -> None:
    market = trade.market
    assert trade_representation(attributes(trade), symbol=market.symbol) == declared(TradeOutput(), trade)
    assert TradeOutput(trade).data == declared(TradeOutput(), trade)
    for user_id in user_ids:
        viewer = type("Viewer", (), {"pk": user_id})()
        expected = declared(MyTradeOutput(context={"user": viewer}), trade)
        assert my_trade_representation(attributes(trade), user_id=user_id, symbol=market.symbol,
                                       base_code=market.base.code, quote_code=market.quote.code) == expected
        assert MyTradeOutput(trade, context={"user": viewer}).data == expected


# ------------------------------------------------------------------ real rows


@pytest.mark.django_db(transaction=True)
def test_rows_written_by_the_matcher_render_the_same(market, traders, matcher):  # noqa: F811
    alice, bob, carol = traders
    place(alice, "SELL", price="100.5", quantity="2")
    place(alice, "SELL", price="101", quantity="1")
    place(bob, "BUY", price="99", quantity="0.5")
    place(bob, "BUY", price="101", quantity="1.25")  # crosses two levels
    place(carol, "BUY", "MARKET", quote_quantity="50")  # market order by quote: no price, no quantity
    place(bob, "SELL", "MARKET", quantity="0.1")
    place(carol, "SELL", "STOP_LOSS_LIMIT", price="90", stop_price="95", quantity="0.3")
    resting = place(carol, "BUY", price="98.76", quantity="0.0123", client_order_id="c-1")
    place(alice, "BUY", price="100.75", quantity="0.5", stp_mode="NONE")  # a self-trade with her own ask
    drain(matcher)
    from orders.services import order_cancel

    order_cancel(user=carol, order_id=resting.id)
    drain(matcher)

    orders = list(Order.objects.select_related("market__base", "market__quote").order_by("id"))
    shapes = [check_order(order) for order in orders]
    assert {shape["status"] for shape in shapes} >= {"FILLED", "NEW", "CANCELED"}
    assert any(shape["price"] is None and shape["quantity"] is None for shape in shapes)  # the market buy by quote
    assert any(shape["stop_price"] is not None for shape in shapes)
    trades = list(Trade.objects.select_related("market__base", "market__quote").order_by("sequence"))
    assert len(trades) >= 3
    assert any(trade.maker_user_id == trade.taker_user_id for trade in trades)  # alice's self-trade
    for trade in trades:
        check_trade(trade, {trade.maker_user_id, trade.taker_user_id})

    from wallet.selectors import balances_for_user

    for user in traders:
        for balance in balances_for_user(user=user):
            expected = declared(BalanceOutput(), balance)
            assert balance_representation(balance.asset, balance.available, balance.held) == expected
            assert BalanceOutput(balance).data == expected


# ------------------------------------------------------------------ edge cases (no database)


def _market(precision: int = 18) -> Market:
    base = Asset(code="WEI", name="Wei-like", precision=precision)
    quote = Asset(code="GWEI", name="Gwei-like", precision=precision)
    return Market(symbol="WEI-GWEI", base=base, quote=quote)


PARIS = datetime.timezone(datetime.timedelta(hours=1))


@pytest.mark.parametrize("fields", [
    # 18-decimal amounts, a partial fill, a cancel requested, timestamps in another zone and with no microseconds
    dict(side="BUY", type="LIMIT", time_in_force="GTC", price=D("0.000000000000000001"),
         quantity=D("1234567890.123456789012345678"), quote_quantity=None, stop_price=None,
         filled_quantity=D("0.000000000000000100"), filled_notional=D("0.000000000000000003"),
         fee_total=D("0E-18"), status="PARTIALLY_FILLED", status_reason="",
         cancel_requested_at=datetime.datetime(2026, 12, 1, 7, 0, tzinfo=PARIS),
         created_at=datetime.datetime(2026, 12, 1, 6, 0, 0, tzinfo=datetime.timezone.utc),
         updated_at=datetime.datetime(2026, 12, 1, 6, 0, 0, 1, tzinfo=datetime.timezone.utc)),
    # a market sell by quote, nothing filled: None price, quantity, time in force, average price
    dict(side="SELL", type="MARKET", time_in_force=None, price=None, quantity=None,
         quote_quantity=D("10.500000000000000000"), stop_price=None, filled_quantity=D(0),
         filled_notional=D(0), fee_total=D(0), status="REJECTED", status_reason="NO_LIQUIDITY",
         cancel_requested_at=None,
         created_at=datetime.datetime(2026, 1, 2, 3, 4, 5, 678900, tzinfo=datetime.timezone.utc),
         updated_at=datetime.datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=PARIS)),
    # a stop limit, fully filled: an average price with many digits
    dict(side="SELL", type="STOP_LOSS_LIMIT", time_in_force="IOC", price=D("3.33"), quantity=D("3"),
         quote_quantity=None, stop_price=D("3.4"), filled_quantity=D("3.000000000000000000"),
         filled_notional=D("10.000000000000000000"), fee_total=D("0.010000000000000000"), status="FILLED",
         status_reason="", cancel_requested_at=None,
         created_at=datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc),
         updated_at=datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc)),
])
def test_order_edge_cases_render_the_same(fields):
    order = Order(id=7, client_order_id="x-1", market=_market(), stp_mode="EXPIRE_TAKER", **fields)
    check_order(order)


def test_trade_edge_cases_render_the_same():
    market = _market()
    trade = Trade(market=market, sequence=10**15, price=D("0.000000000000000001"),
                  quantity=D("999999999.999999999999999999"), notional=D("0.000000001000000000"), taker_side="SELL",
                  maker_order_id=1, taker_order_id=2, maker_user_id=3, taker_user_id=4, maker_fee=D("0E-18"),
                  taker_fee=D("0.000000000000000001"),
                  executed_at=datetime.datetime(2026, 12, 1, 6, 0, tzinfo=PARIS))
    check_trade(trade, [3, 4])
    # A self-trade: the user is maker and taker; REST shows it once, as the taker.
    trade.maker_user_id = trade.taker_user_id = 5
    check_trade(trade, [5])
    assert my_trade_representation(attributes(trade), user_id=5, symbol=market.symbol, base_code="WEI",
                                   quote_code="GWEI")["role"] == "TAKER"


@pytest.mark.parametrize("available, held", [
    (D(0), D(0)),
    (D("0.000000000000000001"), D("123456789.123456789012345678")),
    (D("1E+3"), D("0.100000000000000000")),
])
def test_balance_edge_cases_render_the_same(available, held):
    balance = Balance(asset="WEI", available=available, held=held)
    assert balance_representation("WEI", available, held) == declared(BalanceOutput(), balance)


def test_ticker_with_and_without_trades_renders_the_same():
    now = datetime.datetime(2026, 12, 1, 6, 0, 30, 500000, tzinfo=datetime.timezone.utc)
    empty = {"symbol": "WEI-GWEI", "open": None, "high": None, "low": None, "last": None, "volume": D(0),
             "quote_volume": D(0), "trade_count": 0, "change": None, "change_percent": None,
             "window_start": now.replace(second=0, microsecond=0), "window_end": now}
    busy = dict(empty, open=D("0.000000000000000001"), high=D("2.5"), low=D("1E-18"), last=D("2.000000000000000000"),
                volume=D("12.5"), quote_volume=D("795000"), trade_count=431, change=D("-0.5"),
                change_percent=D("-1.59"))
    for ticker in (empty, busy):
        assert ticker_representation(ticker) == declared(TickerOutput(), ticker) == TickerOutput(ticker).data
