"""Report charts as server-side SVG, and the formats reports print figures in.

A chart is geometry computed here and drawn by templates/conversations/
reports.html: axes with ticks in the data's own unit (counts, durations such
as "1 m 39 s", money), a legend, and each bar's value where it fits (every
value is in the table under the chart, and in each bar's tooltip). No script
draws anything, so the charts obey the page's Content-Security-Policy and
print as they show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

# Series colours: each at least 4.5:1 against white, told apart by hue.
PALETTE = ("#1d4ed8", "#c2410c", "#047857", "#7c3aed")

# Steps a duration axis may take: round seconds, minutes, hours and days.
DURATION_STEPS = (
    1, 2, 5, 10, 15, 30,
    60, 120, 300, 600, 900, 1800,
    3600, 7200, 10800, 21600, 43200,
    86400, 172800, 604800,
)  # fmt: skip
WIDTH = 640
FONT_WIDTH = 6.6  # average width of a character at the charts' 11-12 px


def human_duration(seconds) -> str:
    """Seconds as people say them: "45 s", "1 m 39 s", "2 h 5 m", "3 d 4 h"."""
    if seconds is None:
        return "–"
    seconds = float(seconds)
    if seconds < 10 and seconds != int(seconds):
        return f"{seconds:.1f} s"
    total = round(seconds)
    if total < 60:
        return f"{total} s"
    minutes, rest = divmod(total, 60)
    if minutes < 60:
        return f"{minutes} m {rest} s" if rest else f"{minutes} m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes} m" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def money(value) -> str:
    """An amount in cents from 1 up (12.50), else to four decimals (0.1587),
    as rate cards price single messages."""
    if value is None:
        return "–"
    if abs(Decimal(value)) >= 1:
        return f"{Decimal(value).quantize(Decimal('0.01')):,}"
    amount = Decimal(value).quantize(Decimal("0.0001"))
    text = f"{amount:,.4f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"{whole}.{decimals.ljust(2, '0')}"


def figure(value, kind: str) -> str:
    """A report cell as the page shows it."""
    if value is None or value == "":
        return "–"
    if kind == "duration":
        return human_duration(value)
    if kind == "money":
        return money(value)
    if kind == "count":
        return f"{value:,}"
    if kind == "date":
        return f"{value:%a} {value.day} {value:%b %Y}"
    if kind == "hour":
        return f"{value:02d}:00"
    return str(value)


def short_label(value, kind: str, limit: int) -> str:
    """An axis label: short dates and hours, long names cut with an ellipsis."""
    if kind == "date" and isinstance(value, date):
        return f"{value.day} {value:%b}"
    if kind == "hour":
        return f"{value:02d}"
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class Series:
    key: str
    name: str


@dataclass(frozen=True)
class ChartSpec:
    """What a report table's chart plots: categories along `label`, one bar
    per series, in `unit` (count, duration or money)."""

    label: str
    series: tuple[Series, ...]
    unit: str = "count"
    horizontal: bool = False


def axis(top: float, unit: str, ticks: int = 4) -> list[float]:
    """Round tick values from 0 past `top`, in steps that suit the unit."""
    top = max(float(top), 0.0)
    if top == 0:
        return [0.0, 1.0] if unit != "duration" else [0.0, 60.0]
    raw = top / ticks
    if unit == "duration":
        step = next(
            (step for step in DURATION_STEPS if step >= raw),
            604800 * math.ceil(raw / 604800),
        )
    else:
        magnitude = 10 ** math.floor(math.log10(raw))
        step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
        if unit == "count":
            step = max(step, 1)
    count = math.ceil(top / step - 1e-9)
    return [round(step * index, 6) for index in range(count + 1)]


def tick_label(value: float, unit: str) -> str:
    if unit == "duration":
        return human_duration(value)
    if unit == "money":
        return f"{value:g}"
    return f"{int(value):,}" if value == int(value) else f"{value:g}"


def value_label(value, unit: str) -> str:
    if unit == "duration":
        return human_duration(value)
    if unit == "money":
        return money(value)
    return f"{value:,}"


def bar_chart(
    spec: ChartSpec, rows: list[dict], *, kind: str, title: str, width: int = WIDTH
) -> dict:
    """The geometry of one chart of `rows` (kind: the label column's kind),
    `width` units wide: drawn at about that many pixels, text stays legible."""
    values = [float(row.get(series.key) or 0) for row in rows for series in spec.series]
    ticks = axis(max(values, default=0), spec.unit)
    draw = _horizontal if spec.horizontal else _vertical
    chart = draw(spec, rows, kind, ticks, width)
    chart["legend"] = [
        {"name": series.name, "colour": PALETTE[index], "index": index}
        for index, series in enumerate(spec.series)
    ]
    chart["description"] = _describe(spec, rows, kind, title)
    return chart


def _bar(spec, row, index, value, kind) -> dict:
    series = spec.series[index]
    raw = row.get(series.key)
    shown = "no data" if raw is None else value_label(raw, spec.unit)
    label = figure(row.get(spec.label), kind)
    return {
        "colour": PALETTE[index],
        "title": f"{label}, {series.name}: {shown}",
        "text": "" if raw is None else shown,
        "value": value,
    }


def _vertical(spec: ChartSpec, rows: list[dict], kind: str, ticks, width) -> dict:
    left, right, top, bottom, height = 64, 12, 14, 34, 260
    plot_width, plot_height = width - left - right, height - top - bottom
    scale = plot_height / ticks[-1]
    band = plot_width / max(len(rows), 1)
    bar_width = band * 0.8 / len(spec.series)
    every = math.ceil(len(rows) / max(plot_width // 48, 1))
    bars, categories = [], []
    for position, row in enumerate(rows):
        start = left + position * band + band * 0.1
        for index, series in enumerate(spec.series):
            value = float(row.get(series.key) or 0)
            bar = _bar(spec, row, index, value, kind)
            bar_height = value * scale
            bar.update(
                x=round(start + index * bar_width, 1),
                y=round(top + plot_height - bar_height, 1),
                width=round(max(bar_width - 1, 1), 1),
                height=round(bar_height, 1),
                text_x=round(start + (index + 0.5) * bar_width, 1),
                text_y=round(top + plot_height - bar_height - 4, 1),
            )
            if len(bar["text"]) * FONT_WIDTH + 6 > bar_width or not value:
                bar["text"] = ""
            bars.append(bar)
        if position % every == 0:
            categories.append(
                {
                    "x": round(left + (position + 0.5) * band, 1),
                    "y": top + plot_height + 18,
                    "text": short_label(row.get(spec.label), kind, 10),
                }
            )
    grid = [
        {
            "x1": left,
            "x2": width - right,
            "y1": round(top + plot_height - tick * scale, 1),
            "y2": round(top + plot_height - tick * scale, 1),
            "text": tick_label(tick, spec.unit),
            "text_x": left - 6,
            "text_y": round(top + plot_height - tick * scale + 4, 1),
        }
        for tick in ticks
    ]
    return {
        "width": width,
        "height": height,
        "horizontal": False,
        "bars": bars,
        "categories": categories,
        "grid": grid,
        **_frame(left, width - right, top, plot_height),
    }


def _horizontal(spec: ChartSpec, rows: list[dict], kind: str, ticks, width) -> dict:
    left, right, top, bottom = (150, 74, 8, 30) if width >= 500 else (104, 64, 8, 30)
    bar_height, gap = 14, 12
    band = bar_height * len(spec.series) + gap
    plot_width = width - left - right
    plot_height = band * max(len(rows), 1)
    scale = plot_width / ticks[-1]
    bars, categories = [], []
    for position, row in enumerate(rows):
        start = top + position * band + gap / 2
        for index, series in enumerate(spec.series):
            value = float(row.get(series.key) or 0)
            bar = _bar(spec, row, index, value, kind)
            length = value * scale
            bar.update(
                x=left,
                y=round(start + index * bar_height, 1),
                width=round(length, 1),
                height=bar_height - 2,
                text_x=round(left + length + 4, 1),
                text_y=round(start + index * bar_height + bar_height - 4, 1),
            )
            bars.append(bar)
        categories.append(
            {
                "x": left - 8,
                "y": round(start + band / 2 - gap / 2 + 4, 1),
                "text": short_label(row.get(spec.label), kind, (left - 12) // 7),
                "full": figure(row.get(spec.label), kind),
            }
        )
    grid = [
        {
            "x1": round(left + tick * scale, 1),
            "x2": round(left + tick * scale, 1),
            "y1": top,
            "y2": top + plot_height,
            "text": tick_label(tick, spec.unit),
            "text_x": round(left + tick * scale, 1),
            "text_y": top + plot_height + 18,
        }
        for tick in ticks
    ]
    return {
        "width": width,
        "height": top + plot_height + bottom,
        "horizontal": True,
        "bars": bars,
        "categories": categories,
        "grid": grid,
        **_frame(left, width - right, top, plot_height),
    }


def _frame(left: float, end: float, top: float, plot_height: float) -> dict:
    """The two axis lines: the value axis's and the categories' base line."""
    bottom = top + plot_height
    return {
        "axis": {"x1": left, "y1": top, "x2": left, "y2": bottom},
        "base": {"x1": left, "y1": bottom, "x2": end, "y2": bottom},
    }


def _describe(spec: ChartSpec, rows: list[dict], kind: str, title: str) -> str:
    """What a screen reader says of the chart before the table under it."""
    direction = "Horizontal" if spec.horizontal else "Vertical"
    names = " and ".join(series.name.lower() for series in spec.series)
    text = f"{direction} bar chart of {title.lower()}: {names}, {len(rows)} bars"
    peak = max(
        (
            (float(row.get(series.key) or 0), row, series)
            for row in rows
            for series in spec.series
        ),
        key=lambda item: item[0],
        default=None,
    )
    if peak and peak[0]:
        value, row, series = peak
        label = figure(row.get(spec.label), kind)
        shown = value_label(row.get(series.key), spec.unit)
        text += f". Highest: {series.name.lower()} {shown} ({label})"
    return text + ". Every value is in the table below."
