"""Conversions between Decimal amounts and the engine's integers.

The engine counts prices in ticks, quantities in lots and notional amounts in
tick-lots (ticks x lots). This module is the one boundary where Decimals
become integers and back; nothing else converts. Market rules guarantee that
one tick-lot (tick_size x step_size) is a whole number of the quote asset's
smallest unit, so every conversion here is exact: a value that is not a whole
number of units raises instead of rounding.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

# Amounts have up to 38 digits; the default context (28) would round them.
EXACT = decimal.Context(prec=80, traps=[decimal.Inexact, decimal.InvalidOperation])


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
        return EXACT.multiply(self.tick_size, self.step_size)

    @staticmethod
    def _count(value: Decimal, unit: Decimal) -> int:
        count, remainder = EXACT.divmod(value, unit)
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
        return EXACT.multiply(self.tick_size, ticks)

    def lots_to_quantity(self, lots: int) -> Decimal:
        return EXACT.multiply(self.step_size, lots)

    def tl_to_quote(self, tick_lots: int) -> Decimal:
        return EXACT.multiply(self.tick_lot, tick_lots)

    @staticmethod
    def ceil_to_int(value: Decimal) -> int:
        return int(value.to_integral_value(rounding=ROUND_CEILING))
