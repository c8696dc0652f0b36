"""Market rules and hold amounts for every order type (pure: no database)."""

from decimal import Decimal as D

import pytest

from exchange.core.errors import ApplicationError
from exchange.models import Asset, Market
from orders.rules import OrderRequest, Reference, amend_check, hold_needed, order_check


def _market(**overrides) -> Market:
    fields = dict(
        symbol="BTC-USDT",
        base=Asset(code="BTC", precision=8),
        quote=Asset(code="USDT", precision=8),
        tick_size=D("0.01"),
        step_size=D("0.0001"),
        min_quantity=D("0.0001"),
        max_quantity=D("100"),
        min_notional=D("10"),
        price_band=D("0.1"),
        stp_default="EXPIRE_TAKER",
        status="TRADING",
    )
    fields.update(overrides)
    return Market(**fields)


NO_REFERENCE = Reference()
LAST_100 = Reference(last_price=D("100"), best_bid=D("99.5"), best_ask=D("100.5"))


def _check(request: OrderRequest, market=None, reference=LAST_100):
    return order_check(market=market or _market(), request=request, reference=reference)


def _error(request: OrderRequest, market=None, reference=LAST_100) -> ApplicationError:
    with pytest.raises(ApplicationError) as error:
        _check(request, market, reference)
    return error.value


def test_limit_buy_holds_price_times_quantity_of_quote():
    checked = _check(OrderRequest(side="BUY", type="LIMIT", price=D("100.5"), quantity=D("0.5")))
    assert (checked.hold_asset_is_quote, checked.hold_amount) == (True, D("50.25"))
    assert (checked.time_in_force, checked.stp_mode) == ("GTC", "EXPIRE_TAKER")


def test_limit_sell_holds_its_quantity_of_base():
    checked = _check(OrderRequest(side="SELL", type="LIMIT", price=D("100"), quantity=D("0.5"), stp_mode="NONE"))
    assert (checked.hold_asset_is_quote, checked.hold_amount, checked.stp_mode) == (False, D("0.5"), "NONE")


def test_market_buy_by_quote_holds_that_amount():
    checked = _check(OrderRequest(side="BUY", type="MARKET", quote_quantity=D("250")))
    assert checked.hold_amount == D("250") and checked.time_in_force is None


def test_market_buy_by_quantity_holds_a_band_above_the_last_price():
    """0.5 BTC at last 100 with a 10% band: at most 55 USDT may be spent, and held."""
    checked = _check(OrderRequest(side="BUY", type="MARKET", quantity=D("0.5")))
    assert checked.hold_amount == D("55")


def test_market_buy_by_quantity_without_any_reference_is_refused():
    error = _error(OrderRequest(side="BUY", type="MARKET", quantity=D("0.5")), reference=NO_REFERENCE)
    assert (error.code, error.status_code) == ("NO_REFERENCE_PRICE", 409)


def test_market_buy_by_quantity_falls_back_to_the_best_ask():
    checked = _check(OrderRequest(side="BUY", type="MARKET", quantity=D("1")), reference=Reference(best_ask=D("200")))
    assert checked.hold_amount == D("220")


def test_market_sell_by_quote_holds_the_base_needed_at_the_band_floor():
    """Raising 90 USDT at no less than 100 x 0.9 needs at most 1 BTC."""
    checked = _check(OrderRequest(side="SELL", type="MARKET", quote_quantity=D("90")))
    assert (checked.hold_asset_is_quote, checked.hold_amount) == (False, D("1"))


def test_stop_loss_buy_is_priced_from_its_stop_price():
    checked = _check(OrderRequest(side="BUY", type="STOP_LOSS", stop_price=D("120"), quantity=D("1")))
    assert checked.hold_amount == D("132")


def test_stop_limit_price_is_banded_around_its_stop_price_not_the_last_price():
    checked = _check(OrderRequest(side="SELL", type="STOP_LOSS_LIMIT", stop_price=D("50"), price=D("49"),
                                  quantity=D("1")))
    assert checked.hold_amount == D("1")
    error = _error(OrderRequest(side="SELL", type="STOP_LOSS_LIMIT", stop_price=D("50"), price=D("100"), quantity=D("1")))
    assert error.code == "PRICE_OUTSIDE_BAND"


@pytest.mark.parametrize(
    "request_, code, field",
    [
        (OrderRequest(side="BUY", type="LIMIT", price=D("100.001"), quantity=D("1")), "INVALID_TICK_SIZE", "price"),
        (OrderRequest(side="BUY", type="LIMIT", price=D("100"), quantity=D("1.00001")), "INVALID_STEP_SIZE", "quantity"),
        (OrderRequest(side="BUY", type="LIMIT", price=D("100"), quantity=D("101")), "QUANTITY_TOO_LARGE", "quantity"),
        (OrderRequest(side="BUY", type="LIMIT", price=D("100"), quantity=D("0.0001")), "NOTIONAL_TOO_SMALL", "quantity"),
        (OrderRequest(side="BUY", type="LIMIT", price=D("111"), quantity=D("1")), "PRICE_OUTSIDE_BAND", "price"),
        (OrderRequest(side="BUY", type="LIMIT", price=D("89"), quantity=D("1")), "PRICE_OUTSIDE_BAND", "price"),
        (OrderRequest(side="BUY", type="LIMIT", price=D("-1"), quantity=D("1")), "MUST_BE_POSITIVE", "price"),
        (OrderRequest(side="BUY", type="LIMIT", quantity=D("1")), "PRICE_REQUIRED", "price"),
        (OrderRequest(side="BUY", type="LIMIT", price=D("100")), "QUANTITY_REQUIRED", "quantity"),
        (OrderRequest(side="BUY", type="MARKET", price=D("100"), quantity=D("1")), "PRICE_NOT_ALLOWED", "price"),
        (OrderRequest(side="BUY", type="MARKET"), "QUANTITY_OR_QUOTE_QUANTITY_REQUIRED", "quantity"),
        (OrderRequest(side="BUY", type="MARKET", quantity=D("1"), quote_quantity=D("100")),
         "QUANTITY_OR_QUOTE_QUANTITY_REQUIRED", "quantity"),
        (OrderRequest(side="BUY", type="MARKET", quantity=D("1"), time_in_force="IOC"), "TIME_IN_FORCE_NOT_ALLOWED",
         "time_in_force"),
        (OrderRequest(side="BUY", type="LIMIT_MAKER", price=D("100"), quantity=D("1"), time_in_force="IOC"),
         "INVALID_TIME_IN_FORCE", "time_in_force"),
        (OrderRequest(side="BUY", type="STOP_LOSS", quantity=D("1")), "STOP_PRICE_REQUIRED", "stop_price"),
        (OrderRequest(side="BUY", type="LIMIT", price=D("100"), stop_price=D("90"), quantity=D("1")),
         "STOP_PRICE_NOT_ALLOWED", "stop_price"),
        (OrderRequest(side="BUY", type="MARKET", quote_quantity=D("100.000000001")), "INVALID_QUOTE_PRECISION",
         "quote_quantity"),
        (OrderRequest(side="BUY", type="MARKET", quote_quantity=D("5")), "NOTIONAL_TOO_SMALL", "quote_quantity"),
        (OrderRequest(side="HOLD", type="LIMIT", price=D("100"), quantity=D("1")), "INVALID_SIDE", "side"),
        (OrderRequest(side="BUY", type="ICEBERG", price=D("100"), quantity=D("1")), "INVALID_ORDER_TYPE", "type"),
        (OrderRequest(side="BUY", type="LIMIT", price=D("100"), quantity=D("1"), client_order_id="has space"),
         "INVALID_CLIENT_ORDER_ID", "client_order_id"),
    ],
)
def test_rule_violations_have_stable_codes_and_fields(request_, code, field):
    error = _error(request_)
    assert (error.code, error.field, error.status_code) == (code, field, 400)


@pytest.mark.parametrize(
    "status, order_type, code",
    [
        ("HALTED", "LIMIT", "MARKET_HALTED"),
        ("CANCEL_ONLY", "LIMIT", "MARKET_CANCEL_ONLY"),
        ("POST_ONLY", "MARKET", "MARKET_POST_ONLY"),
        ("POST_ONLY", "STOP_LOSS_LIMIT", "MARKET_POST_ONLY"),
    ],
)
def test_market_status_refuses_orders_with_409(status, order_type, code):
    request = OrderRequest(side="BUY", type=order_type, price=D("100") if order_type != "MARKET" else None,
                           stop_price=D("101") if "STOP" in order_type else None, quantity=D("1"))
    error = _error(request, market=_market(status=status))
    assert (error.code, error.status_code) == (code, 409)


def test_post_only_market_accepts_limit_orders():
    assert _check(OrderRequest(side="BUY", type="LIMIT", price=D("100"), quantity=D("1")),
                  market=_market(status="POST_ONLY")).hold_amount == D("100")


def test_without_a_last_price_the_band_does_not_apply():
    checked = _check(OrderRequest(side="BUY", type="LIMIT", price=D("5000"), quantity=D("1")), reference=NO_REFERENCE)
    assert checked.hold_amount == D("5000")


class _Resting:
    type = "LIMIT"
    side = "BUY"
    price = D("100")
    quantity = D("2")
    filled_quantity = D("0.5")


def test_amend_validates_new_terms_and_needs_more_than_filled():
    new_price, new_quantity = amend_check(market=_market(), order=_Resting(), price=None, quantity=D("1"),
                                          reference=LAST_100)
    assert (new_price, new_quantity) == (D("100"), D("1"))
    with pytest.raises(ApplicationError) as error:
        amend_check(market=_market(), order=_Resting(), price=None, quantity=D("0.5"), reference=LAST_100)
    assert error.value.code == "QUANTITY_NOT_ABOVE_FILLED"
    with pytest.raises(ApplicationError) as error:
        amend_check(market=_market(), order=_Resting(), price=None, quantity=None, reference=LAST_100)
    assert error.value.code == "NOTHING_TO_AMEND"


def test_hold_needed_for_the_unfilled_part():
    assert hold_needed(side="BUY", price=D("100"), quantity=D("2"), filled_quantity=D("0.5")) == D("150")
    assert hold_needed(side="SELL", price=D("100"), quantity=D("2"), filled_quantity=D("0.5")) == D("1.5")


def test_amend_hold_covers_current_and_new_terms_whatever_fills_first():
    """A sell needs the larger remaining quantity; a buy amended to a higher
    price needs the new notional; a buy amended to a LOWER price and a larger
    quantity also needs what filling at the old price first would cost."""
    from orders.rules import amend_hold_needed

    assert amend_hold_needed(side="SELL", price=D(100), quantity=D(2), filled_quantity=D("0.5"),
                             new_price=D(100), new_quantity=D(3)) == D("2.5")
    assert amend_hold_needed(side="BUY", price=D(100), quantity=D(2), filled_quantity=D("0.5"),
                             new_price=D(110), new_quantity=D(3)) == D(275)
    # 1.5 may fill at 100 first (150), then 1 more at 90 (90): 240 > 90 x 2.5 = 225.
    assert amend_hold_needed(side="BUY", price=D(100), quantity=D(2), filled_quantity=D("0.5"),
                             new_price=D(90), new_quantity=D(3)) == D(240)
    # Reducing needs nothing more than the current terms.
    assert amend_hold_needed(side="BUY", price=D(100), quantity=D(2), filled_quantity=D(0),
                             new_price=D(100), new_quantity=D(1)) == D(200)


# 18-decimal assets with fine tick and step sizes: products of amounts have up to
# 36 significant digits, beyond the 28 of Python's default decimal context.
FINE = dict(base=Asset(code="FINE", precision=18), quote=Asset(code="WEI", precision=18), tick_size=D("1e-9"),
            step_size=D("1e-9"), min_quantity=D("1e-9"), max_quantity=D("1e15"), min_notional=D("0"))
FINE_PRICE, FINE_QUANTITY = D("123456789.123456789"), D("12345678.123456789")


def test_holds_are_exact_with_18_decimal_assets():
    """price x quantity needs 35 digits here: the hold is the exact product, not one rounded
    to 28 digits (which would hold less than the engine later settles)."""
    import decimal

    exact = decimal.Context(prec=100).multiply(FINE_PRICE, FINE_QUANTITY)
    assert len(exact.as_tuple().digits) > 28
    checked = _check(OrderRequest(side="BUY", type="LIMIT", price=FINE_PRICE, quantity=FINE_QUANTITY),
                     market=_market(**FINE), reference=NO_REFERENCE)
    assert checked.hold_amount == exact
    assert hold_needed(side="BUY", price=FINE_PRICE, quantity=FINE_QUANTITY, filled_quantity=D("1e-9")) == \
        decimal.Context(prec=100).multiply(FINE_PRICE, FINE_QUANTITY - D("1e-9"))


def test_amend_holds_are_exact_with_18_decimal_assets():
    """The hold an amendment tops up to covers the exact worst case, to the last unit."""
    import decimal

    from orders.rules import amend_hold_needed

    new_price = FINE_PRICE - D("0.000000001")
    needed = amend_hold_needed(side="BUY", price=FINE_PRICE, quantity=FINE_QUANTITY, filled_quantity=D("0"),
                               new_price=new_price, new_quantity=FINE_QUANTITY + D("0.000000001"))
    context = decimal.Context(prec=100)
    worst = context.add(context.multiply(new_price, FINE_QUANTITY + D("1e-9")),
                        context.multiply(FINE_QUANTITY, D("1e-9")))
    assert needed == max(context.multiply(FINE_PRICE, FINE_QUANTITY), worst)
