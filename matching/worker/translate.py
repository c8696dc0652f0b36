"""The batch's pure stage: engine TRADE events -> trade rows and netted ledger legs, in integers.

No database, no Django models, no Decimal per trade: everything here counts
in the engine's integers (ticks, lots, tick-lots) and in each asset's
smallest unit; ``matching.worker.batch`` converts the few netted totals to
Decimal at the edge, and PostgreSQL converts the trade rows' integers to
amounts inside the INSERT. Tested without a database
(tests/matching/test_translate.py).

Cost: a few integer operations and dict updates per trade; for a batch of
1,000 commands (~550 trades) about 2 ms of Python.

Fees: each side pays its fee in the asset it receives (base for the buyer,
quote for the seller), rounded down to the asset's unit. With the rate as an
exact fraction ``n / d`` (``Decimal.as_integer_ratio``), the fee in units is
``received_units * n // d``: the same figure as ``wallet.fees.fee_amount``
(received x rate rounded down to the precision), without a Decimal.

Ledger legs, per trade (units of the asset; HELD legs name the order whose
hold they consume)::

    buyer  HELD quote  -notional          (buyer's order hold)
    seller AVAIL quote +notional - seller_fee
    FEES   quote       +seller_fee
    seller HELD base   -quantity          (seller's order hold)
    buyer  AVAIL base  +quantity - buyer_fee
    FEES   base        +buyer_fee

``net_legs`` sums them per (user, asset, account kind, hold): the batch
posts one journal transaction with those sums (docs/LEDGER.md, "Netting").
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from matching.units import EXACT

AVAILABLE, HELD, FEES = "AVAILABLE", "HELD", "FEES"
BUY = "BUY"

# (user id or None for the operator, asset id, account kind, order id of the hold or None)
LegKey = tuple[int | None, int, str, int | None]


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """What the translation needs of a market, as integers."""

    base_asset_id: int
    quote_asset_id: int
    base_units_per_lot: int  # step_size / base unit
    quote_units_per_tick_lot: int  # tick_size x step_size / quote unit

    @classmethod
    def of(cls, market) -> "MarketSpec":
        base_unit, quote_unit = market.base.unit, market.quote.unit
        per_lot, rest = divmod(market.step_size, base_unit)
        per_tick_lot, rest2 = divmod(EXACT.multiply(market.tick_size, market.step_size), quote_unit)
        assert not rest and not rest2, "market rules make lots and tick-lots whole numbers of units"
        return cls(market.base_id, market.quote_id, int(per_lot), int(per_tick_lot))


def rate_ratio(rate: Decimal) -> tuple[int, int]:
    """A fee rate as an exact fraction (numerator, denominator)."""
    numerator, denominator = rate.as_integer_ratio()
    assert numerator >= 0, "fee rates are not negative"
    return numerator, denominator


@dataclass(slots=True)
class TradeTranslation:
    """The trades of one batch as columns (integers), and what they move in the ledger."""

    sequence: list[int] = field(default_factory=list)
    price_ticks: list[int] = field(default_factory=list)
    quantity_lots: list[int] = field(default_factory=list)
    taker_side: list[str] = field(default_factory=list)
    maker_order_id: list[int] = field(default_factory=list)
    taker_order_id: list[int] = field(default_factory=list)
    maker_user_id: list[int] = field(default_factory=list)
    taker_user_id: list[int] = field(default_factory=list)
    maker_fee_units: list[int] = field(default_factory=list)
    taker_fee_units: list[int] = field(default_factory=list)
    # order id -> fee units paid, in base (the order bought) or in quote (it sold)
    base_fee_units_by_order: dict[int, int] = field(default_factory=dict)
    quote_fee_units_by_order: dict[int, int] = field(default_factory=dict)
    # netted ledger legs of the trades, in units of the leg's asset
    legs: dict[LegKey, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.sequence)


def translate_trades(trades, fee_rates: dict[int, tuple[tuple[int, int], tuple[int, int]]],
                     spec: MarketSpec) -> TradeTranslation:
    """Trade rows and netted ledger legs of ``trades`` (engine TRADE events, in sequence order).

    ``fee_rates`` maps each order id to its ((maker n, d), (taker n, d)) rates
    (``rate_ratio``). Never touches the database.
    """
    out = TradeTranslation()
    legs: dict[LegKey, int] = defaultdict(int)
    base_fees_by_order: dict[int, int] = defaultdict(int)
    quote_fees_by_order: dict[int, int] = defaultdict(int)
    base, quote = spec.base_asset_id, spec.quote_asset_id
    per_lot, per_tick_lot = spec.base_units_per_lot, spec.quote_units_per_tick_lot
    base_fees = quote_fees = 0
    for trade in trades:
        quantity_units = trade.quantity_lots * per_lot
        notional_units = trade.price_ticks * trade.quantity_lots * per_tick_lot
        maker_n, maker_d = fee_rates[trade.maker_order_id][0]
        taker_n, taker_d = fee_rates[trade.taker_order_id][1]
        if trade.taker_side == BUY:
            buyer_order, buyer_user = trade.taker_order_id, trade.taker_user_id
            seller_order, seller_user = trade.maker_order_id, trade.maker_user_id
            taker_fee = quantity_units * taker_n // taker_d
            maker_fee = notional_units * maker_n // maker_d
            buyer_fee, seller_fee = taker_fee, maker_fee
        else:
            buyer_order, buyer_user = trade.maker_order_id, trade.maker_user_id
            seller_order, seller_user = trade.taker_order_id, trade.taker_user_id
            taker_fee = notional_units * taker_n // taker_d
            maker_fee = quantity_units * maker_n // maker_d
            buyer_fee, seller_fee = maker_fee, taker_fee
        legs[(buyer_user, quote, HELD, buyer_order)] -= notional_units
        legs[(seller_user, quote, AVAILABLE, None)] += notional_units - seller_fee
        legs[(seller_user, base, HELD, seller_order)] -= quantity_units
        legs[(buyer_user, base, AVAILABLE, None)] += quantity_units - buyer_fee
        base_fees += buyer_fee
        quote_fees += seller_fee
        base_fees_by_order[buyer_order] += buyer_fee
        quote_fees_by_order[seller_order] += seller_fee
        out.sequence.append(trade.sequence)
        out.price_ticks.append(trade.price_ticks)
        out.quantity_lots.append(trade.quantity_lots)
        out.taker_side.append(trade.taker_side)
        out.maker_order_id.append(trade.maker_order_id)
        out.taker_order_id.append(trade.taker_order_id)
        out.maker_user_id.append(trade.maker_user_id)
        out.taker_user_id.append(trade.taker_user_id)
        out.maker_fee_units.append(maker_fee)
        out.taker_fee_units.append(taker_fee)
    if base_fees:
        legs[(None, base, FEES, None)] += base_fees
    if quote_fees:
        legs[(None, quote, FEES, None)] += quote_fees
    out.legs = {key: amount for key, amount in legs.items() if amount}
    out.base_fee_units_by_order = {order_id: units for order_id, units in base_fees_by_order.items() if units}
    out.quote_fee_units_by_order = {order_id: units for order_id, units in quote_fees_by_order.items() if units}
    return out


@dataclass(frozen=True, slots=True)
class Candle:
    """One minute's OHLCV of a batch's trades, in ticks, lots and tick-lots."""

    open_ticks: int
    high_ticks: int
    low_ticks: int
    close_ticks: int
    volume_lots: int
    quote_volume_tl: int
    trade_count: int
    first_sequence: int
    last_sequence: int


def candle_of(translation: TradeTranslation) -> Candle | None:
    """The candle of all the batch's trades (they share the batch's execution time, so one minute)."""
    if not translation.sequence:
        return None
    prices, lots = translation.price_ticks, translation.quantity_lots
    return Candle(
        open_ticks=prices[0], high_ticks=max(prices), low_ticks=min(prices), close_ticks=prices[-1],
        volume_lots=sum(lots), quote_volume_tl=sum(p * q for p, q in zip(prices, lots)),
        trade_count=len(prices), first_sequence=translation.sequence[0], last_sequence=translation.sequence[-1],
    )
