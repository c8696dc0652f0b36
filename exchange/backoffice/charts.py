"""Small server-rendered SVG bar charts for the dashboard (no JavaScript, no chart library).

A chart is a row of bars over equal time buckets, scaled to its largest
value, each bar with a tooltip (``<title>``) saying its bucket and value,
and the largest value written in its corner. Pure functions of their input.
"""

from __future__ import annotations

from decimal import Decimal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

WIDTH = 288
HEIGHT = 64
GAP = 1


def bar_chart(points: list[tuple[str, Decimal | int, str]], *, label: str, colour: str = "#417690") -> SafeString:
    """An SVG of ``points`` = [(bucket label, value, value text)...], oldest first; ``value``
    scales the bar, ``value text`` (already formatted) is what the tooltip shows."""
    count = max(len(points), 1)
    top = max((value for _, value, _ in points), default=0) or 1
    bar_width = Decimal(WIDTH) / count
    bars = format_html_join(
        "", '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}: {}</title></rect>',
        (
            (_px(index * bar_width), _px(HEIGHT - _height(value, top)), _px(max(bar_width - GAP, 1)),
             _px(_height(value, top)), colour, bucket, text)
            for index, (bucket, value, text) in enumerate(points)
        ),
    )
    largest = max(points, key=lambda point: point[1])[2] if points else "0"
    return format_html(
        '<svg class="bo-chart" role="img" aria-label="{}" viewBox="0 0 {} {}" width="{}" height="{}">'
        '<rect width="100%" height="100%" fill="none" stroke="#ddd"/>{}'
        '<text x="4" y="12" font-size="10" fill="#666">max {}</text></svg>',
        label, WIDTH, HEIGHT, WIDTH, HEIGHT, bars, largest,
    )


def _height(value: Decimal | int, top: Decimal | int) -> Decimal:
    """Pixels of a bar: 85% of the chart's height for the largest value, leaving room for its label."""
    if not value:
        return Decimal(0)
    return (Decimal(HEIGHT) * Decimal("0.85") * Decimal(value) / Decimal(top)).quantize(Decimal("0.1"))


def _px(value: Decimal | int) -> str:
    return f"{Decimal(value):.1f}"
