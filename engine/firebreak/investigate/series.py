"""The incident's metric, baseline and threshold step by step — with the engine's own
buckets and arithmetic, so the chart shows what the engine judged."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from firebreak.core.engine import add_excluded, span_baseline
from firebreak.core.events import Event, format_ts, parse_ts
from firebreak.core.window import Bucket, accumulator, summarize
from firebreak.dsl.compiler import CompiledRule
from firebreak.investigate.model import Point, Series
from firebreak.records import RecordKind

MAX_POINTS = 300


def metric_series(
    rule: CompiledRule, events: Sequence[Event], lo: int, hi: int, incidents: Sequence[Judged] = ()
) -> Series:
    """Points at step boundaries in [lo, hi] (at most MAX_POINTS; a multiple of the step
    apart when the range is long). ``events``: the group's events (already filtered by the
    rule's `where` and group). ``incidents``: the group's incidents in the records
    (`judged_spans`) — while one was pending or open the engine judged against the baseline
    frozen at its onset, and after it kept its windows out of the baseline; so does the chart."""
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
        frozen = next((j for j in incidents if j.onset <= at and (j.end is None or at <= j.end)), None)
        if frozen is not None:
            baseline = frozen.baseline
        elif rule.factor is not None:
            excluded: list[tuple[int, int, float | None]] = []
            for j in incidents:
                if j.end is not None and j.end < at:  # over: kept out of the baseline since
                    add_excluded(excluded, (j.onset - rule.window_ms, j.end, j.baseline))
            baseline = span_baseline(rule, buckets, first_seen, at, excluded)
        else:
            baseline = None
        threshold = rule.factor * baseline if rule.factor is not None and baseline is not None else rule.threshold
        size = rule.metric.sample_size(window)
        points.append(Point(format_ts(at), _round(value), _round(baseline), _round(threshold), size))
    return Series(step_ms=stride * step, points=tuple(points))


class Judged(NamedTuple):
    """An incident of the chart's group: its onset, its resolution (None: still open) and the
    baseline frozen at its onset (as its records show it)."""

    onset: int
    end: int | None
    baseline: float | None


def judged_spans(records: Sequence[dict[str, Any]], rule: str, group: dict[str, Any]) -> list[Judged]:
    """The incidents of ``rule`` and ``group`` in ``records``, in time order."""
    resolved = {
        r["incident_id"]: parse_ts(r["ts"])
        for r in records
        if r["type"] == RecordKind.RESOLVED and r["rule"] == rule and r["group"] == group
    }
    return [
        Judged(parse_ts(r["onset"]), resolved.get(r["incident_id"]), r["baseline"])
        for r in records
        if r["type"] == RecordKind.OPENED and r["rule"] == rule and r["group"] == group
    ]


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")
