"""The metric chart of an investigation report: inline SVG built from the `Report` (model.py).

Pure: no I/O, no clock. Every string taken from the report is HTML-escaped. The chart is
`<svg id="metric-chart">` with the metric (`series-value`), the baseline (`series-baseline`,
dashed) and the threshold (`series-threshold`) as polylines broken where a value is null, the
incident's open period shaded (`open-period`), one `mark mark-<kind>` per timeline item, axes
(HH:MM UTC, value ticks) and a legend. With no points it is an empty frame saying "no data".
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from html import escape
from typing import Any

from firebreak.core import parse_ts
from firebreak.investigate.model import Mark, Point, Report

# Also used by the page's CSS and looked for, as pixels, by the browser test.
VALUE_COLOUR = "#1f5fbf"
BASELINE_COLOUR = "#6b7280"
THRESHOLD_COLOUR = "#c2410c"
OPEN_FILL = "#fbe3e1"
GRID_COLOUR = "#e5e7eb"
AXIS_COLOUR = "#9ca3af"
TEXT_COLOUR = "#374151"
MARK_COLOURS = {
    "cause": "#7c3aed",
    "first_anomalous_event": "#b45309",
    "onset": "#d97706",
    "detected": "#b91c1c",
    "escalated": "#7f1d1d",
    "contained": "#15803d",
    "renewed": "#65a30d",
    "resolved": "#0f766e",
    "released": "#0e7490",
}
MARK_LABELS = {"first_anomalous_event": "first anomalous"}

WIDTH = 1000
LEFT, RIGHT = 72, 24
PLOT_HEIGHT = 260
LANE_HEIGHT = 14
MAX_LANES = 6
CHAR_WIDTH = 6.0  # rough width of one 11px label character, to keep labels apart
_MINUTE = 60_000
TIME_STEPS_MS = [m * _MINUTE for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)]


def ts_ms(value: Any) -> int | None:
    """An RFC 3339 time (or epoch ms) → epoch ms; None when absent or unreadable."""
    if value is None:
        return None
    try:
        return parse_ts(value)
    except ValueError:
        return None


def number(value: Any) -> float | None:
    """A finite number, or None (null, text, booleans, NaN and infinities are not plotted)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def css_token(value: Any) -> str:
    """A value made safe for a class name: `detected` stays, anything odd becomes `other`."""
    text = str(value)
    return text if re.fullmatch(r"[a-z0-9_-]{1,40}", text) else "other"


def mark_colour(kind: Any) -> str:
    return MARK_COLOURS.get(str(kind), TEXT_COLOUR)


def metric_chart(report: Report) -> str:
    incident, series = report.incident, report.series
    points = [(ms, p) for p in series.points if (ms := ts_ms(p.ts)) is not None]
    points.sort(key=lambda pair: pair[0])
    marks = [(ms, item) for item in report.timeline if (ms := ts_ms(item.ts)) is not None]
    opened, resolved = ts_ms(incident.opened), ts_ms(incident.resolved)

    times = [ms for ms, _ in points] + [ms for ms, _ in marks] + [t for t in (opened, resolved) if t is not None]
    if not times:
        times = [t for t in (ts_ms(report.range.since), ts_ms(report.range.until)) if t is not None]
    x_lo, x_hi = (min(times), max(times)) if times else (None, None)
    if x_lo is not None and x_lo == x_hi:
        pad = int(number(series.step_ms) or _MINUTE)
        x_lo, x_hi = x_lo - pad, x_hi + pad

    values = [
        v for _, p in points for k in ("value", "baseline", "threshold") if (v := number(getattr(p, k))) is not None
    ]
    y_ticks = _value_ticks(min([0.0, *values]), max([0.0, *values]))
    lanes, placed = _place_labels(marks, x_lo, x_hi)
    top = 10 + lanes * LANE_HEIGHT + 6
    bottom = top + PLOT_HEIGHT
    height = bottom + 80
    frame = _Frame(x_lo, x_hi, y_ticks[0], y_ticks[-1], top)
    metric = str(incident.metric or "metric")

    out = [
        f'<svg id="metric-chart" class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-labelledby="metric-chart-title" font-size="11" fill="{TEXT_COLOUR}">',
        f'<title id="metric-chart-title">{escape(metric)} over time, with baseline, threshold and timeline</title>',
        f'<rect class="plot-area" x="{LEFT}" y="{top}" width="{frame.plot_w}" height="{PLOT_HEIGHT}" fill="#fff"/>',
    ]
    if x_lo is not None and points and opened is not None:
        start, end = max(opened, x_lo), min(resolved if resolved is not None else x_hi, x_hi)
        if end >= start:
            x1, x2 = frame.x(start), frame.x(end)
            out.append(
                f'<rect class="open-period" x="{x1:.1f}" y="{top}" width="{max(x2 - x1, 1.0):.1f}" '
                f'height="{PLOT_HEIGHT}" fill="{OPEN_FILL}"><title>incident open</title></rect>'
            )
    out += _value_axis(frame, y_ticks, metric)
    if x_lo is not None:
        out += _time_axis(frame, bottom)
    if points:
        out += _lines(frame, points, "threshold", THRESHOLD_COLOUR, 'stroke-width="1.5"')
        out += _lines(frame, points, "baseline", BASELINE_COLOUR, 'stroke-width="1.5" stroke-dasharray="6 4"')
        out += _lines(frame, points, "value", VALUE_COLOUR, 'stroke-width="2.25"')
        out += _marks(frame, placed, bottom)
    else:
        out.append(
            f'<text class="no-data" x="{LEFT + frame.plot_w / 2:.1f}" y="{top + PLOT_HEIGHT / 2:.1f}" '
            'text-anchor="middle" font-size="14">no data: the report has no metric series</text>'
        )
    out.append(
        f'<rect class="plot-frame" x="{LEFT}" y="{top}" width="{frame.plot_w}" height="{PLOT_HEIGHT}" '
        f'fill="none" stroke="{AXIS_COLOUR}"/>'
    )
    out += _legend(bottom + 58, metric)
    out.append("</svg>")
    return "\n".join(out)


class _Frame:
    """Maps times and values to SVG coordinates."""

    def __init__(self, x_lo: int | None, x_hi: int | None, y_lo: float, y_hi: float, top: int) -> None:
        self.x_lo, self.x_hi, self.y_lo, self.y_hi, self.top = x_lo, x_hi, y_lo, y_hi, top
        self.plot_w = WIDTH - LEFT - RIGHT

    def x(self, ms: int) -> float:
        if self.x_lo is None or self.x_hi is None or self.x_hi == self.x_lo:
            return LEFT + self.plot_w / 2
        return LEFT + (ms - self.x_lo) / (self.x_hi - self.x_lo) * self.plot_w

    def y(self, value: float) -> float:
        return self.top + PLOT_HEIGHT - (value - self.y_lo) / (self.y_hi - self.y_lo) * PLOT_HEIGHT


def _lines(frame: _Frame, points: list[tuple[int, Point]], key: str, colour: str, style: str) -> list[str]:
    """One polyline per run of non-null values (``key``: the point's field); a lone value
    between gaps is a dot."""
    runs: list[list[tuple[float, float]]] = [[]]
    for ms, point in points:
        value = number(getattr(point, key))
        if value is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((frame.x(ms), frame.y(value)))
    out = []
    for run in runs:
        if len(run) == 1:
            (x, y) = run[0]
            out.append(f'<circle class="series-{key}" cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{colour}"/>')
        elif run:
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
            out.append(
                f'<polyline class="series-{key}" points="{coords}" fill="none" stroke="{colour}" {style} '
                'stroke-linejoin="round" stroke-linecap="round"/>'
            )
    return out


def _place_labels(marks: list[tuple[int, Mark]], x_lo: int | None, x_hi: int | None) -> tuple[int, list]:
    """Stack mark labels in lanes above the plot so that close marks do not overprint."""
    frame = _Frame(x_lo, x_hi, 0.0, 1.0, 0)
    lane_ends: list[float] = []
    placed = []
    for ms, item in sorted(marks, key=lambda pair: pair[0]):
        kind = str(item.kind or "event")
        label = MARK_LABELS.get(kind, kind.replace("_", " "))[:24]
        x = frame.x(ms)
        width = len(label) * CHAR_WIDTH + 6
        anchor_end = x + width > WIDTH - 4
        start, end = (x - width, x) if anchor_end else (x, x + width)
        free = [i for i, lane_end in enumerate(lane_ends) if lane_end < start]
        if free:
            lane = free[0]
        elif len(lane_ends) < MAX_LANES:
            lane = len(lane_ends)
            lane_ends.append(end)
        else:
            lane = min(range(MAX_LANES), key=lambda i: lane_ends[i])
        lane_ends[lane] = end
        placed.append((ms, item, kind, label, lane, anchor_end))
    return max(len(lane_ends), 1), placed


def _marks(frame: _Frame, placed: list, bottom: int) -> list[str]:
    out = []
    for ms, item, kind, label, lane, anchor_end in placed:
        x = frame.x(ms)
        y_text = 10 + (lane + 1) * LANE_HEIGHT - 3
        colour = mark_colour(kind)
        full = str(item.label or kind)
        when = datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%S")
        text_x, anchor = (x - 3, "end") if anchor_end else (x + 3, "start")
        out.append(
            f'<g class="mark mark-{css_token(kind)}"><title>{escape(when)} UTC: {escape(full)}</title>'
            f'<line x1="{x:.1f}" y1="{y_text - 9}" x2="{x:.1f}" y2="{bottom}" stroke="{colour}" '
            'stroke-width="1.25" stroke-dasharray="3 2"/>'
            f'<text x="{text_x:.1f}" y="{y_text}" text-anchor="{anchor}" fill="{colour}">{escape(label)}</text></g>'
        )
    return out


def _value_ticks(lo: float, hi: float) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first, last = math.floor(lo / step), math.ceil(hi / step)
    return [round(i * step, 12) for i in range(first, last + 1)]


def _tick_label(value: float, step: float) -> str:
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:,.{decimals}f}"


def _value_axis(frame: _Frame, ticks: list[float], metric: str) -> list[str]:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    out = []
    for tick in ticks:
        y = frame.y(tick)
        out.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="{GRID_COLOUR}"/>'
            f'<text class="tick-value" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_tick_label(tick, step)}</text>"
        )
    middle = frame.top + PLOT_HEIGHT / 2
    out.append(
        f'<text class="axis-title" transform="translate(14 {middle:.1f}) rotate(-90)" text-anchor="middle">'
        f"{escape(metric[:60])}</text>"
    )
    return out


def _time_axis(frame: _Frame, bottom: int) -> list[str]:
    assert frame.x_lo is not None and frame.x_hi is not None
    span = frame.x_hi - frame.x_lo
    step = next((s for s in TIME_STEPS_MS if span / s <= 8), TIME_STEPS_MS[-1])
    out = []
    tick = -(-frame.x_lo // step) * step
    while tick <= frame.x_hi:
        x = frame.x(tick)
        label = datetime.fromtimestamp(tick / 1000, tz=UTC).strftime("%H:%M")
        out.append(
            f'<line class="grid" x1="{x:.1f}" y1="{frame.top}" x2="{x:.1f}" y2="{bottom}" stroke="{GRID_COLOUR}"/>'
            f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 5}" stroke="{AXIS_COLOUR}"/>'
            f'<text class="tick-time" x="{x:.1f}" y="{bottom + 18}" text-anchor="middle">{label}</text>'
        )
        tick += step
    first = datetime.fromtimestamp(frame.x_lo / 1000, tz=UTC).strftime("%Y-%m-%d")
    last = datetime.fromtimestamp(frame.x_hi / 1000, tz=UTC).strftime("%Y-%m-%d")
    days = first if first == last else f"{first} – {last}"
    out.append(
        f'<text class="axis-title" x="{LEFT + frame.plot_w / 2:.1f}" y="{bottom + 36}" text-anchor="middle">'
        f"time (UTC, {days})</text>"
    )
    return out


def _legend(y: float, metric: str) -> list[str]:
    items = [
        ("value", f'stroke="{VALUE_COLOUR}" stroke-width="2.25"', metric[:40]),
        ("baseline", f'stroke="{BASELINE_COLOUR}" stroke-width="1.5" stroke-dasharray="6 4"', "baseline"),
        ("threshold", f'stroke="{THRESHOLD_COLOUR}" stroke-width="1.5"', "threshold"),
        ("open", "", "incident open"),
        ("marks", f'stroke="{TEXT_COLOUR}" stroke-width="1.25" stroke-dasharray="3 2"', "timeline"),
    ]
    out = ['<g class="legend">']
    x = float(LEFT)
    for key, style, label in items:
        if key == "open":
            out.append(f'<rect x="{x:.1f}" y="{y - 9}" width="22" height="12" fill="{OPEN_FILL}" stroke="#e8b4ae"/>')
        elif key == "marks":
            out.append(f'<line x1="{x + 11:.1f}" y1="{y - 10}" x2="{x + 11:.1f}" y2="{y + 4}" {style}/>')
        else:
            out.append(f'<line x1="{x:.1f}" y1="{y - 3}" x2="{x + 22:.1f}" y2="{y - 3}" {style}/>')
        out.append(f'<text x="{x + 28:.1f}" y="{y + 1}">{escape(label)}</text>')
        x += 28 + len(label) * CHAR_WIDTH + 24
    out.append("</g>")
    return out
