"""The incident's metric, baseline and threshold step by step — with the engine's own
buckets and arithmetic, so the chart shows what the engine judged."""

from __future__ import annotations

from collections.abc import Sequence

from firebreak.core.engine import span_baseline
from firebreak.core.events import Event, format_ts
from firebreak.core.window import Bucket, accumulator, summarize
from firebreak.dsl.compiler import CompiledRule
from firebreak.investigate.model import Point, Series

MAX_POINTS = 300


def metric_series(
    rule: CompiledRule, events: Sequence[Event], lo: int, hi: int, frozen: tuple[int, int, float | None] | None
) -> Series:
    """Points at step boundaries in [lo, hi] (at most MAX_POINTS; a multiple of the step
    apart when the range is long). ``events``: the group's events (already filtered by the
    rule's `where` and group). ``frozen``: (from, to, baseline) — while the incident was
    pending or open the engine judged against the baseline frozen at onset; so does the chart."""
    step = rule.step_ms
    add = accumulator(rule)
    buckets: dict[int, Bucket] = {}
    for e in events:
        start = e.ts - e.ts % step
        bucket = buckets.get(start)
        if bucket is None:
            bucket = buckets[start] = Bucket(rule)
        add(bucket, e)
    first_seen = min(buckets) if buckets else None
    lo -= lo % step
    count = (hi - lo) // step + 1
    stride = max(1, -(-count // MAX_POINTS))
    points = []
    for at in range(lo, hi + 1, stride * step):
        window = summarize(rule, (b for s, b in buckets.items() if at - rule.window_ms <= s < at), detail=False)
        value = rule.metric.value(window) if window.n else None
        if frozen is not None and frozen[0] <= at <= frozen[1]:
            baseline = frozen[2]
        else:
            baseline = span_baseline(rule, buckets, first_seen, at) if rule.factor is not None else None
        threshold = rule.factor * baseline if rule.factor is not None and baseline is not None else rule.threshold
        size = rule.metric.sample_size(window)
        points.append(Point(format_ts(at), _round(value), _round(baseline), _round(threshold), size))
    return Series(step_ms=stride * step, points=tuple(points))


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")
