"""Conversions between Decimal amounts and the engine's integers.

The engine counts prices in ticks, quantities in lots and notional amounts in
tick-lots (ticks x lots). This module is the one boundary where Decimals
become integers and back; nothing else converts. Market rules guarantee that
one tick-lot (tick_size x step_size) is a whole number of the quote asset's
smallest unit, so every conversion here is exact: a value that is not a whole
number of units raises instead of rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal


class NotAMultiple(ValueError):
    """An amount is not a whole number of the unit it must be counted in."""


@dataclass(frozen=True)
class MarketUnits:
    tick_size: Decimal
    step_size: Decimal
    base_unit: Decimal
    quote_unit: Decimal

    @classmethod
    def of(cls, market) -> "MarketUnits":
        return cls(
            tick_size=market.tick_size,
            step_size=market.step_size,
            base_unit=market.base.unit,
            quote_unit=market.quote.unit,
        )

    @property
    def tick_lot(self) -> Decimal:
        """The quote amount of one tick-lot."""
        return self.tick_size * self.step_size

    @staticmethod
    def _count(value: Decimal, unit: Decimal) -> int:
        count, remainder = divmod(value, unit)
        if remainder:
            raise NotAMultiple(f"{value} is not a multiple of {unit}")
        return int(count)

    def price_to_ticks(self, price: Decimal) -> int:
        return self._count(price, self.tick_size)

    def quantity_to_lots(self, quantity: Decimal) -> int:
        return self._count(quantity, self.step_size)

    def quote_to_tl(self, amount: Decimal) -> int:
        return self._count(amount, self.tick_lot)

    def ticks_to_price(self, ticks: int) -> Decimal:
        return self.tick_size * ticks

    def lots_to_quantity(self, lots: int) -> Decimal:
        return self.step_size * lots

    def tl_to_quote(self, tick_lots: int) -> Decimal:
        return self.tick_lot * tick_lots

    def fee(self, amount: Decimal, rate: Decimal, *, unit: Decimal) -> Decimal:
        """``amount x rate`` rounded DOWN to ``unit`` (the receiving asset's smallest unit).

        Rounding a fee down moves a fraction of a unit from the exchange to the
        user; it never creates money, since a fee only splits an amount that
        already exists between the receiver and the fees account.
        """
        return (amount * rate).quantize(unit, rounding=ROUND_FLOOR)

    @staticmethod
    def ceil_to_int(value: Decimal) -> int:
        return int(value.to_integral_value(rounding=ROUND_CEILING))
