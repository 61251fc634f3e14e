"""Inline SVG bar charts for the compliance report: static markup, no scripts, all text escaped.

Usage::

    series = (Series("releases", "#2b7a3d"), Series("denials", "#b3261e"))
    svg = bar_chart("By resource", [("db/key", (12, 3)), ("tls/cert", (4, 0))], series)
    svg = time_chart("Per day", [("2025-05-06", (12, 3)), ...], series)

Every label and title goes through ``html.escape``; numbers are formatted
by the code. Each bar has an SVG ``<title>`` so a browser shows its exact
value on hover without any script.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Final

__all__ = ["Series", "bar_chart", "time_chart"]

_LABEL_W: Final = 220
_BAR_W: Final = 420
_ROW_H: Final = 22
_FONT: Final = "font-family:sans-serif;font-size:12px"
_MAX_LABEL: Final = 34


@dataclass(frozen=True, slots=True)
class Series:
    """One quantity drawn in every row, with its legend name and fill colour (``#rrggbb``)."""

    name: str
    color: str


def _short(label: str) -> str:
    return label if len(label) <= _MAX_LABEL else label[: _MAX_LABEL - 1] + "\u2026"


def _legend(series: Sequence[Series], y: int) -> str:
    parts = []
    for i, s in enumerate(series):
        x = 10 + i * 120
        parts.append(
            f'<rect x="{x}" y="{y}" width="10" height="10" fill="{escape(s.color)}"/>'
            f'<text x="{x + 14}" y="{y + 9}">{escape(s.name)}</text>'
        )
    return "".join(parts)


def _svg(title: str, width: int, height: int, body: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" style="{_FONT}"><title>{escape(title)}</title>'
        f"{body}</svg>"
    )


def bar_chart(
    title: str, rows: Sequence[tuple[str, Sequence[int]]], series: Sequence[Series]
) -> str:
    """Horizontal bars: one row per label, one bar per series, scaled to the largest value."""
    top = max((v for _, values in rows for v in values), default=0) or 1
    bar_h = max(4, (_ROW_H - 6) // max(1, len(series)))
    parts = [_legend(series, 4)]
    y = 22
    for label, values in rows:
        parts.append(
            f'<text x="{_LABEL_W - 6}" y="{y + _ROW_H // 2 + 4}" text-anchor="end">'
            f"<title>{escape(label)}</title>{escape(_short(label))}</text>"
        )
        for i, (s, value) in enumerate(zip(series, values, strict=True)):
            w = round(_BAR_W * value / top)
            by = y + 3 + i * bar_h
            parts.append(
                f'<rect x="{_LABEL_W}" y="{by}" width="{w}" height="{bar_h - 1}" '
                f'fill="{escape(s.color)}"><title>{escape(label)}: {value} '
                f"{escape(s.name)}</title></rect>"
                f'<text x="{_LABEL_W + w + 4}" y="{by + bar_h - 2}">{value}</text>'
            )
        y += _ROW_H
    if not rows:
        parts.append(f'<text x="10" y="{y + 14}">no data</text>')
        y += _ROW_H
    return _svg(title, _LABEL_W + _BAR_W + 60, y + 6, "".join(parts))


def time_chart(
    title: str, days: Sequence[tuple[str, Sequence[int]]], series: Sequence[Series]
) -> str:
    """Vertical stacked bars, one column per day in order; first and last day labelled."""
    height, top_pad, bottom_pad = 160, 22, 30
    n = max(1, len(days))
    col = max(2, min(24, 720 // n))
    width = max(360, col * n + 60)
    top = max((sum(values) for _, values in days), default=0) or 1
    parts = [_legend(series, 4)]
    base = top_pad + height
    parts.append(
        f'<line x1="40" y1="{base}" x2="{40 + col * n}" y2="{base}" stroke="#888"/>'
        f'<text x="36" y="{top_pad + 10}" text-anchor="end">{top}</text>'
        f'<text x="36" y="{base}" text-anchor="end">0</text>'
    )
    for i, (day, values) in enumerate(days):
        x = 40 + i * col
        y = base
        for s, value in zip(series, values, strict=True):
            h = round(height * value / top)
            y -= h
            parts.append(
                f'<rect x="{x}" y="{y}" width="{max(1, col - 1)}" height="{h}" '
                f'fill="{escape(s.color)}"><title>{escape(day)}: {value} '
                f"{escape(s.name)}</title></rect>"
            )
    if days:
        first, last = escape(days[0][0]), escape(days[-1][0])
        parts.append(f'<text x="40" y="{base + 16}">{first}</text>')
        if len(days) > 1:
            parts.append(
                f'<text x="{40 + col * n}" y="{base + 16}" text-anchor="end">{last}</text>'
            )
    else:
        parts.append(f'<text x="44" y="{base - 10}">no data</text>')
    return _svg(title, width, top_pad + height + bottom_pad, "".join(parts))
