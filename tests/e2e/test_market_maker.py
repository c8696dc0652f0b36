"""The demo market maker against real processes (daphne, matchers, PostgreSQL, Redis): it
quotes both sides of every market, prints trades, stops cleanly on SIGTERM, cancels its
quotes and revokes its key, and the ledger stays sound."""

import signal
from decimal import Decimal as D
from io import StringIO

import pytest
from django.core.management import call_command

from exchange.apikeys.models import ApiKey
from exchange.demo import demo_load
from exchange.market_maker import grid_prices
from orders.models import Order
from tests.e2e.harness import get_json, running_stack, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_grid_prices_never_cross_and_stay_on_the_grid():
    """Pure arithmetic: bids below the mid, asks above, every price a multiple of the step."""
    for mid in (D("65000"), D("65000.01"), D("64999.99"), D("3000.5")):
        bids, asks = grid_prices(mid=mid, level_step=D("32.5"), levels=4)
        assert len(bids) == len(asks) == 4
        assert max(bids) < mid < min(asks)
        assert all(price % D("32.5") == 0 for price in bids + asks)
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks)


@pytest.fixture
def stack(redis_app):
    demo_load(password="maker-e2e-pw")
    with running_stack() as running:
        yield running


def _book(stack, symbol):
    status, book = get_json(f"{stack.base_url}/api/v1/orderbook/{symbol}?depth=20")
    assert status == 200, book
    return book


def test_market_maker_quotes_both_sides_trades_and_stops_cleanly(stack):
    maker = stack.spawn("market-maker", "manage.py", "run_market_maker", "--url", stack.base_url,
                        "--interval", "0.3", "--levels", "4", "--taker-probability", "0.5", "--seed", "7")
    try:
        def quoted():
            books = [_book(stack, symbol) for symbol in ("BTC-USDT", "ETH-USDT")]
            return all(len(book["bids"]) >= 3 and len(book["asks"]) >= 3 for book in books) and books

        books = wait_for(quoted, timeout_s=30, what="quotes on both sides of both markets")
        for book in books:
            assert D(book["bids"][0][0]) < D(book["asks"][0][0]), book
        wait_for(lambda: get_json(f"{stack.base_url}/api/v1/trades?market=BTC-USDT")[1], timeout_s=30,
                 what="a trade in BTC-USDT")
        assert ApiKey.objects.filter(user__username="maker", revoked_at__isnull=True).count() == 1

        maker.popen.send_signal(signal.SIGTERM)
        assert maker.popen.wait(timeout=20) == 0
    finally:
        if maker.alive():
            maker.popen.kill()

    # Its quotes are canceled and its key revoked when it stops.
    open_statuses = ["PENDING", "NEW", "PARTIALLY_FILLED", "UNTRIGGERED"]
    wait_for(lambda: not Order.objects.filter(user__username="maker", status__in=open_statuses).exists(),
             timeout_s=20, what="the maker's quotes to be canceled")
    assert not ApiKey.objects.filter(user__username="maker", revoked_at__isnull=True).exists()
    assert Order.objects.filter(user__username="maker").count() > 10
    out = StringIO()
    call_command("check_ledger", stdout=out)
    assert "ledger ok" in out.getvalue()
