"""Kill switches act at once, on new requests and on orders already queued in the streams,
through ``manage.py kill_switch`` (which needs no web tier).

Orders are placed (committed, enqueued) and only then is the switch turned on; draining the
matcher afterwards is the matcher reaching those queued commands."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from django.core.management import CommandError, call_command

from exchange.core.errors import ApplicationError
from exchange.models import Market
from matching import stream
from matching.worker.matcher import Matcher
from orders.services import order_amend, order_cancel, orders_cancel_all
from risk.models import TradingRestriction
from tests.factories import AssetFactory, MarketFactory
from tests.risk.conftest import drain, fund, place
from wallet.selectors import hold_remaining

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("sound_ledger")]


def kill_switch(*args) -> str:
    from io import StringIO

    out = StringIO()
    call_command("kill_switch", *args, stdout=out)
    return out.getvalue()


def refused_with(code: str, call, *args, **kwargs) -> ApplicationError:
    with pytest.raises(ApplicationError) as info:
        call(*args, **kwargs)
    assert info.value.code == code, info.value.as_dict()
    return info.value


@pytest.fixture
def eth(live_market, traders):
    """A second market with its own matcher, where the traders are funded too."""
    market = MarketFactory(base=AssetFactory(code="ETH", name="Ether", precision=8), quote=live_market.quote,
                           tick_size=D("0.01"), step_size=D("0.001"), min_quantity=D("0.001"), min_notional=D("1"),
                           price_band=D("0.5"))
    for user in traders:
        fund(user, market, {"ETH": D("100"), "USDT": D("100000")})
    stream.heartbeat_write(market.symbol, sequence=0, pid=0, backlog=0, last_price="10")
    matcher = Matcher(market.symbol, batch_size=500, block_ms=1, sweep_after_s=0.5)
    matcher.start()
    yield market, matcher
    matcher.stop()


def status(order) -> tuple[str, str]:
    order.refresh_from_db()
    return order.status, order.status_reason


def test_freezing_a_user_rejects_their_queued_orders_and_cancels_their_open_ones(live_market, traders, matcher, eth):
    """Frozen: new orders, amendments and cancel-alls are refused (403 RISK_USER_FROZEN); the
    order still queued in the stream is REJECTED by the matcher with RISK_USER_FROZEN and its
    hold released; resting orders in both markets are cancelled; other users trade on."""
    alice, bob = traders[:2]
    _, eth_matcher = eth
    resting = place(alice, "BUY", price="99", quantity="1")
    resting_eth = place(alice, "SELL", symbol="ETH-USDT", price="11", quantity="2")
    drain(matcher)
    drain(eth_matcher)
    queued = place(alice, "BUY", price="98", quantity="1")

    output = kill_switch("freeze-user", "alice", "--reason", "account takeover suspected")
    assert "alice frozen" in output and "3 open orders" in output

    error = refused_with("RISK_USER_FROZEN", place, alice, "BUY", price="97", quantity="1")
    assert error.status_code == 403
    refused_with("RISK_USER_FROZEN", order_amend, user=alice, order_id=resting.pk, price=D("98.5"), quantity=None)
    refused_with("RISK_USER_FROZEN", orders_cancel_all, user=alice, symbol="BTC-USDT")

    drain(matcher)
    drain(eth_matcher)
    assert status(queued) == ("REJECTED", "RISK_USER_FROZEN")
    assert hold_remaining(reference=f"order:{queued.pk}") == 0
    assert status(resting)[0] == "CANCELED" and status(resting_eth)[0] == "CANCELED"
    place(bob, "BUY", price="98", quantity="1")
    assert "already frozen" in kill_switch("freeze-user", "alice", "--reason", "again")

    kill_switch("resume-user", "alice", "--reason", "owner verified")
    place(alice, "BUY", price="97", quantity="1")


def test_cancel_only_lets_cancels_through_and_nothing_else(live_market, traders, matcher):
    """Cancel-only: placement and amendment refused; the queued new order REJECTED with
    RISK_USER_CANCEL_ONLY; resting orders stay, and cancel and cancel-all go through."""
    alice = traders[0]
    resting = place(alice, "BUY", price="99", quantity="1")
    other = place(alice, "BUY", price="95", quantity="1")
    drain(matcher)
    queued = place(alice, "BUY", price="98", quantity="1")
    kill_switch("cancel-only-user", "alice", "--reason", "limits review")

    refused_with("RISK_USER_CANCEL_ONLY", place, alice, "BUY", price="97", quantity="1")
    refused_with("RISK_USER_CANCEL_ONLY", order_amend, user=alice, order_id=resting.pk, price=None, quantity=D("2"))
    drain(matcher)
    assert status(queued) == ("REJECTED", "RISK_USER_CANCEL_ONLY")
    assert status(resting)[0] == "NEW"
    order_cancel(user=alice, order_id=other.pk)
    assert orders_cancel_all(user=alice, symbol="BTC-USDT") == 2
    drain(matcher)
    assert status(resting)[0] == "CANCELED" and status(other)[0] == "CANCELED"


def test_halting_a_market_rejects_its_queued_orders_before_the_halt_applies(live_market, traders, matcher):
    """halt-market: new orders are refused at once (MARKET_HALTED); orders queued before the halt's
    own command are REJECTED; after the matcher applied it the market is HALTED; resume-market
    brings it back to TRADING."""
    alice, bob = traders[:2]
    place(alice, "SELL", price="100", quantity="1")
    drain(matcher)
    queued = place(bob, "BUY", price="100", quantity="1")
    kill_switch("halt-market", "BTC-USDT", "--reason", "oracle incident")
    refused_with("MARKET_HALTED", place, bob, "BUY", price="100", quantity="1")
    drain(matcher)
    assert status(queued) == ("REJECTED", "MARKET_HALTED"), "it would have traded"
    assert Market.objects.get(pk=live_market.pk).status == "HALTED"

    kill_switch("resume-market", "BTC-USDT", "--reason", "incident over")
    drain(matcher)
    assert Market.objects.get(pk=live_market.pk).status == "TRADING"
    place(bob, "BUY", price="100", quantity="1")


def test_halting_the_exchange_stops_every_matcher(live_market, traders, matcher, eth):
    """halt-all: every new order is refused with RISK_EXCHANGE_HALTED, queued ones are REJECTED,
    every market becomes HALTED; a market cannot be resumed alone; resume-all resumes both,
    except a market halted on its own, which stays halted."""
    alice = traders[0]
    _, eth_matcher = eth
    queued = [place(alice, "BUY", price="99", quantity="1"), place(alice, "BUY", symbol="ETH-USDT", price="9",
                                                                    quantity="1")]
    kill_switch("halt-all", "--reason", "exchange-wide incident")
    refused_with("RISK_EXCHANGE_HALTED", place, alice, "BUY", price="99", quantity="1")
    refused_with("RISK_EXCHANGE_HALTED", orders_cancel_all, user=alice, symbol="ETH-USDT")
    drain(matcher)
    drain(eth_matcher)
    assert [status(order) for order in queued] == [("REJECTED", "RISK_EXCHANGE_HALTED")] * 2
    assert set(Market.objects.values_list("status", flat=True)) == {"HALTED"}

    kill_switch("halt-market", "ETH-USDT", "--reason", "its own trouble")
    with pytest.raises(CommandError, match="RISK_EXCHANGE_HALTED"):
        kill_switch("resume-market", "ETH-USDT", "--reason", "too early")
    kill_switch("resume-all", "--reason", "incident over")
    drain(matcher)
    drain(eth_matcher)
    assert dict(Market.objects.values_list("symbol", "status")) == {"BTC-USDT": "TRADING", "ETH-USDT": "HALTED"}
    place(alice, "BUY", price="99", quantity="1")


def test_every_switch_records_who_why_and_when(live_market, traders):
    """Each restriction records its reason, source and time, and its lift the same way; the
    status action lists what is on; a reason is required."""
    kill_switch("cancel-only-user", "bob", "--reason", "review")
    assert "USER_CANCEL_ONLY" in kill_switch("status") and "bob" in kill_switch("status")
    kill_switch("resume-user", "bob", "--reason", "done")
    row = TradingRestriction.objects.get()
    assert (row.reason, row.source, row.lift_reason, row.lift_source) == ("review", "command", "done", "command")
    assert row.created_at <= row.lifted_at
    assert kill_switch("status").strip() == "No kill switch is on."
    with pytest.raises(CommandError):
        call_command("kill_switch", "halt-all")
    with pytest.raises(CommandError, match="REASON_REQUIRED"):
        kill_switch("halt-all", "--reason", "  ")
    with pytest.raises(CommandError, match="no user"):
        kill_switch("freeze-user", "nobody", "--reason", "x")
