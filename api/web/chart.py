"""The dashboard's chart: open and resolved violations over time, as plain SVG drawn by
the server (no script, no library, nothing fetched by the browser).

:func:`timeline` is pure: from the violations' ``first_seen`` and ``resolved_at`` (ISO
8601) it counts, at the end of each of ``points`` equal steps from the first record to
``now``, how many were open then and how many had been resolved by then.
:func:`svg_paths` scales those counts into a fixed viewBox.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

POINTS = 40
WIDTH, HEIGHT = 640.0, 220.0
MARGIN_LEFT, MARGIN_BOTTOM, MARGIN_TOP, MARGIN_RIGHT = 48.0, 28.0, 12.0, 12.0


@dataclass(frozen=True, slots=True)
class Point:
    at: dt.datetime
    open: int
    resolved: int


def _time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    parsed = dt.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def timeline(
    records: Iterable[tuple[str | None, str | None]], now: dt.datetime, *, points: int = POINTS
) -> list[Point]:
    """(first_seen, resolved_at) pairs -> open and resolved counts over time."""
    spans = []
    for first, resolved in records:
        start = _time(first)
        if start is not None:
            spans.append((start, _time(resolved)))
    if not spans:
        return []
    begin = min(start for start, _ in spans)
    end = max(now, *(r for _, r in spans if r is not None), *(s for s, _ in spans))
    step = (end - begin) / max(points - 1, 1)
    out = []
    for i in range(points):
        at = begin + step * i
        open_now = sum(1 for s, r in spans if s <= at and (r is None or r > at))
        done = sum(1 for _, r in spans if r is not None and r <= at)
        out.append(Point(at, open_now, done))
    return out


@dataclass(frozen=True, slots=True)
class Chart:
    open_path: str
    resolved_path: str
    y_max: int
    y_ticks: list[tuple[float, int]]
    x_labels: list[tuple[float, str]]
    width: float = WIDTH
    height: float = HEIGHT
    left: float = MARGIN_LEFT
    bottom: float = HEIGHT - MARGIN_BOTTOM
    right: float = WIDTH - MARGIN_RIGHT
    top: float = MARGIN_TOP


def svg_paths(series: list[Point]) -> Chart | None:
    """The polylines and axis labels for ``series``; None when there is nothing to draw."""
    if not series:
        return None
    y_max = max(1, *(max(p.open, p.resolved) for p in series))
    plot_w = WIDTH - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    n = max(len(series) - 1, 1)

    def x(i: int) -> float:
        return MARGIN_LEFT + plot_w * i / n

    def y(v: int) -> float:
        return MARGIN_TOP + plot_h * (1 - v / y_max)

    def path(values: list[int]) -> str:
        return " ".join(
            f"{'M' if i == 0 else 'L'}{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values)
        )

    ticks = sorted({0, y_max // 2, y_max})
    span = series[-1].at - series[0].at
    label_format = "%Y-%m-%d" if span > dt.timedelta(days=2) else "%Y-%m-%d %H:%M"
    labels_at = sorted({0, len(series) // 2, len(series) - 1})
    return Chart(
        open_path=path([p.open for p in series]),
        resolved_path=path([p.resolved for p in series]),
        y_max=y_max,
        y_ticks=[(y(t), t) for t in ticks],
        x_labels=[(x(i), series[i].at.strftime(label_format)) for i in labels_at],
    )
