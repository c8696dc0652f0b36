"""Amounts in the back office at their asset's or market's precision.

The database stores every amount with 18 decimal places; a price of a
market with a tick of 0.01 is shown "2996.39", not "2996.390000000000000000".
Prices show the places of the market's tick size, quantities those of its
step size, amounts of an asset those of the asset's precision.
``amount_column`` makes a list column (or a read-only detail field) of one
such amount; ``NormalizedDecimalsForm`` shows editable decimals (a market's
sizes, fee rates) without trailing zeros.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Callable

from django import forms
from django.contrib import admin


def places(unit: Decimal | None) -> int:
    """Decimal places of a tick, step or unit: 0.01 -> 2, 1 -> 0, 5 -> 0."""
    if unit is None:
        return 0
    return max(0, -unit.normalize().as_tuple().exponent)


def amount_text(value: Decimal | None, decimal_places: int) -> str:
    """``value`` with exactly ``decimal_places`` places when that keeps it exact, else every digit it has."""
    if value is None:
        return "-"
    quantum = Decimal(1).scaleb(-decimal_places)
    shown = value.quantize(quantum)
    # A value finer than the display precision (never expected) is shown in full rather than rounded.
    return f"{shown:f}" if shown == value else f"{value.normalize():f}"


def tick_places(obj) -> int:
    return places(obj.market.tick_size)


def step_places(obj) -> int:
    return places(obj.market.step_size)


def quote_places(obj) -> int:
    return obj.market.quote.precision


def asset_places(obj) -> int:
    return obj.asset.precision


def amount_column(field: str, places_of: Callable[[object], int], *, description: str | None = None):
    """A list column / read-only field showing ``obj.<field>`` at ``places_of(obj)`` places, sortable by the field."""

    @admin.display(description=description or field.replace("_", " "), ordering=field)
    def column(obj):
        return amount_text(getattr(obj, field), places_of(obj))

    column.__name__ = f"{field}_shown"
    return column


class NormalizedDecimalsForm(forms.ModelForm):
    """A model form showing stored decimals without their trailing zeros ("0.01", not
    "0.010000000000000000"); what is saved is unchanged."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, value in list(self.initial.items()):
            if isinstance(value, Decimal) and value.is_finite():
                # Still a Decimal (has_changed compares it with the submitted value), without exponent.
                self.initial[name] = value.quantize(Decimal(1)) if value == value.to_integral() else value.normalize()
