"""Server-rendered SVG charts: no script, no chart library, readable by screen readers (title, description
and a table of the same numbers beside every chart)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from html import escape

from markupsafe import Markup


def stacked_weekly_bars(weeks: Sequence[tuple[date, dict[str, int]]], groups: Sequence[tuple[str, str]],
                        title: str, description: str, width: int = 640, height: int = 260) -> Markup:
    """One bar per week, stacked by group (bottom first, in ``groups`` order). ``groups``: (key, label); each
    group is drawn with the CSS class ``series-<key>`` so the stylesheet sets its colour."""
    left, right, top, bottom = 36, 8, 12, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(counts.get(key, 0) for key, _ in groups) for _, counts in weeks]
    peak = max([*totals, 1])
    step = _nice_step(peak)
    ceiling = max(step, -(-peak // step) * step)
    slot = plot_w / max(1, len(weeks))
    bar = slot * 0.64
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-labelledby="chart-title chart-desc"'
        f' xmlns="http://www.w3.org/2000/svg">',
        f'<title id="chart-title">{escape(title)}</title><desc id="chart-desc">{escape(description)}</desc>',
    ]
    for tick in range(0, ceiling + 1, step):
        y = top + plot_h - plot_h * tick / ceiling
        parts.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick}</text>')
    for i, (week, counts) in enumerate(weeks):
        x = left + i * slot + (slot - bar) / 2
        y = top + plot_h
        for key, label in groups:
            n = counts.get(key, 0)
            if not n:
                continue
            h = plot_h * n / ceiling
            y -= h
            parts.append(f'<rect class="series-{escape(key)}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}"'
                         f' height="{h:.1f}"><title>{escape(f"Week of {week:%-d %b}: {n} {label.lower()}")}'
                         f'</title></rect>')
        if i % 2 == 0 or len(weeks) <= 8:
            parts.append(f'<text class="axis" x="{x + bar / 2:.1f}" y="{top + plot_h + 16}"'
                         f' text-anchor="middle">{week:%-d %b}</text>')
    parts.append(f'<line class="baseline" x1="{left}" x2="{width - right}" y1="{top + plot_h}"'
                 f' y2="{top + plot_h}"/>')
    parts.append("</svg>")
    return Markup("".join(parts))


def _nice_step(peak: int) -> int:
    """A gridline step (1, 2, 5, 10, 20, 50, ...) giving at most five lines."""
    step = 1
    while peak / step > 5:
        for factor in (2, 2.5, 2):
            step = int(step * factor)
            if peak / step <= 5:
                break
    return step
