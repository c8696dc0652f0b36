"""The batch's pure stage (matching/worker/translate.py), without a database."""

from __future__ import annotations

import random
from collections import defaultdict
from decimal import Decimal as D

from matching.engine.events import Trade
from matching.worker.translate import AVAILABLE, FEES, HELD, MarketSpec, candle_of, rate_ratio, translate_trades
from wallet.fees import fee_amount

BASE, QUOTE = 1, 2
# BTC-USDT with 8 decimals each, tick 0.01, step 0.0001: a lot is 10,000 base units,
# a tick-lot (0.000001 USDT) is 100 quote units.
SPEC = MarketSpec(base_asset_id=BASE, quote_asset_id=QUOTE, base_units_per_lot=10_000, quote_units_per_tick_lot=100)
RATES = {"maker": D("0.001"), "taker": D("0.002")}


def trade(sequence, price_ticks, lots, *, maker=(1, 10), taker=(2, 20), taker_side="BUY"):
    return Trade(sequence, 0, price_ticks, lots, maker[0], maker[1], taker[0], taker[1], taker_side)


def rates_for(*order_ids, maker=RATES["maker"], taker=RATES["taker"]):
    return {order_id: (rate_ratio(maker), rate_ratio(taker)) for order_id in order_ids}


def test_one_trade_worked_example():
    """Bob (taker, order 2) buys 0.5 BTC at 30,000.00 from Alice (maker, order 1):
    notional 15,000 USDT; Bob pays 0.2% of the 0.5 BTC he receives, Alice 0.1% of
    the 15,000 USDT she receives."""
    out = translate_trades([trade(7, 3_000_000, 5_000)], rates_for(1, 2), SPEC)
    quantity, notional = 50_000_000, 1_500_000_000_000  # units of 1e-8
    assert out.legs == {
        (20, QUOTE, HELD, 2): -notional,
        (10, QUOTE, AVAILABLE, None): notional - 1_500_000_000,
        (10, BASE, HELD, 1): -quantity,
        (20, BASE, AVAILABLE, None): quantity - 100_000,
        (None, BASE, FEES, None): 100_000,
        (None, QUOTE, FEES, None): 1_500_000_000,
    }
    assert (out.maker_fee_units, out.taker_fee_units) == ([1_500_000_000], [100_000])
    assert out.base_fee_units_by_order == {2: 100_000}
    assert out.quote_fee_units_by_order == {1: 1_500_000_000}


def test_fees_equal_the_decimal_fee_amount_and_legs_balance_per_asset():
    """Seeded random trades and rates: every fee equals ``wallet.fees.fee_amount`` on the
    Decimal amounts (received x rate rounded down to 8 places), and the netted legs sum to
    zero per asset, so the batch's one journal transaction balances."""
    rng = random.Random(13)
    rates = [D("0"), D("0.001"), D("0.0025"), D("0.00075"), D("0.003333")]
    trades, fee_rates = [], {}
    for sequence in range(1, 400):
        maker_order, taker_order = rng.randint(1, 60), rng.randint(61, 120)
        fee_rates[maker_order] = (rate_ratio(rng.choice(rates)), rate_ratio(rng.choice(rates)))
        fee_rates[taker_order] = (rate_ratio(rng.choice(rates)), rate_ratio(rng.choice(rates)))
        trades.append(trade(sequence, rng.randint(1, 10_000_000), rng.randint(1, 50_000),
                            maker=(maker_order, rng.randint(1, 5)), taker=(taker_order, rng.randint(1, 5)),
                            taker_side=rng.choice(("BUY", "SELL"))))
    out = translate_trades(trades, fee_rates, SPEC)

    def rate_of(ratio):
        return D(ratio[0]) / D(ratio[1])

    for index, t in enumerate(trades):
        quantity = D(t.quantity_lots) * D("0.0001")
        notional = D(t.price_ticks * t.quantity_lots) * D("0.000001")
        taker_buys = t.taker_side == "BUY"
        expected_taker = fee_amount(received=quantity if taker_buys else notional,
                                    rate=rate_of(fee_rates[t.taker_order_id][1]), precision=8)
        expected_maker = fee_amount(received=notional if taker_buys else quantity,
                                    rate=rate_of(fee_rates[t.maker_order_id][0]), precision=8)
        assert D(out.taker_fee_units[index]).scaleb(-8) == expected_taker
        assert D(out.maker_fee_units[index]).scaleb(-8) == expected_maker
    totals = defaultdict(int)
    for (_, asset, _, _), units in out.legs.items():
        totals[asset] += units
    assert totals == {BASE: 0, QUOTE: 0}
    assert all(units < 0 for (_, _, kind, _), units in out.legs.items() if kind == HELD)
    assert all(hold is None for (_, _, kind, hold) in out.legs if kind != HELD)


def test_legs_are_netted_per_user_asset_kind_and_hold():
    """Two fills of the same maker order by the same taker make one leg per (account, hold)."""
    out = translate_trades([trade(1, 100, 2), trade(2, 100, 3)], rates_for(1, 2, maker=D(0), taker=D(0)), SPEC)
    assert out.legs[(10, BASE, HELD, 1)] == -5 * 10_000
    assert out.legs[(20, QUOTE, HELD, 2)] == -500 * 100
    assert len(out.legs) == 4  # no fee legs at a zero rate
    assert len(out) == 2


def test_the_batch_candle():
    out = translate_trades([trade(5, 101, 2), trade(6, 99, 1), trade(7, 100, 4)], rates_for(1, 2), SPEC)
    candle = candle_of(out)
    assert (candle.open_ticks, candle.high_ticks, candle.low_ticks, candle.close_ticks) == (101, 101, 99, 100)
    assert (candle.volume_lots, candle.quote_volume_tl, candle.trade_count) == (7, 202 + 99 + 400, 3)
    assert (candle.first_sequence, candle.last_sequence) == (5, 7)
    assert candle_of(translate_trades([], {}, SPEC)) is None
