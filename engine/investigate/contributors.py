"""Drill-down: which dimension values over-represent the anomaly, against the baseline.

For every value v of every dimension (model, model_version, prompt_template, tenant,
service, feature, user, and the rule's own `by` fields), over the rule's population
(events passing its `where`, all groups):

- ``share``: v's part of the anomaly mass during the incident;
- ``baseline_share``: v's part of the anomaly mass in the baseline period;
- ``lift``: how many times v's own rate of anomaly mass is above its baseline rate (ratio
  metrics: mass per event, the baseline rate shrunk towards the population's with 50
  pseudo-events, so a value new in the incident — a new model version — is compared with
  the population; volume metrics: mass per unit of time, at least one event's worth);
- ``excess``: v's mass above what its baseline predicts for the incident period.

Values covering the same events with the same mass are merged into one row
(``same_as``: a template and the one feature that uses it). They are ranked by
``score`` = explained × precision: ``explained`` = v's excess / the
whole excess (how much of the anomaly v accounts for), ``precision`` = v's excess / v's
mass (1 − 1/lift: how anomalous v's part is). A value that accounts for all of the
anomaly and little else ranks first; a broader value that contains it (its service) ranks
just below; a value that merely shares in it (one of five attackers) ranks lower.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from engine.core.events import Event
from engine.dsl.compiler import CompiledRule, getter
from engine.investigate.anomaly import RATIO, Mass

DIMENSIONS = ("model", "model_version", "prompt_template", "tenant", "service", "feature", "user")
PSEUDO_EVENTS = 50
MAX_LIFT = 999.0
MIN_MASS = 3.0  # a value needs this much anomaly mass in the incident to be listed


def dimensions_of(rule: CompiledRule) -> tuple[str, ...]:
    extra = tuple(".".join(p) for p in rule.by if ".".join(p) not in DIMENSIONS)
    return DIMENSIONS + extra


def rank_contributors(
    rule: CompiledRule,
    mass: Mass,
    incident: Sequence[Event],
    baseline: Sequence[Event],
    incident_ms: int,
    baseline_ms: int,
) -> list[dict[str, Any]]:
    """Every (dimension, value) with positive excess and some mass, best first."""
    dims = dimensions_of(rule)
    getters = [getter(tuple(d.split("."))) for d in dims]
    inc = _tally(incident, mass, getters)
    base = _tally(baseline, mass, getters)
    m_base, n_base = _totals(baseline, mass)
    m_inc, n_inc = _totals(incident, mass)
    if m_inc <= 0:
        return []
    if mass.mode == RATIO:
        r_all = m_base / n_base if n_base else m_inc / n_inc
        total_excess = m_inc - n_inc * r_all
    else:
        scale = incident_ms / baseline_ms if baseline_ms > 0 else 1.0
        unit = m_base / n_base if n_base and m_base > 0 else (m_inc / n_inc)
        total_excess = m_inc - m_base * scale
    rows = []
    for i, dim in enumerate(dims):
        for value, (n_v, m_v) in inc[i].items():
            if m_v < MIN_MASS:
                continue
            bn, bm = base[i].get(value, (0, 0.0))
            if mass.mode == RATIO:
                rate_base = (bm + PSEUDO_EVENTS * r_all) / (bn + PSEUDO_EVENTS)
                expected = n_v * rate_base
                lift = (m_v / n_v) / rate_base if rate_base > 0 else MAX_LIFT
            else:
                expected = bm * scale
                lift = m_v / max(expected, unit * scale)
            excess = m_v - expected
            if excess <= 0:
                continue
            explained = min(1.0, excess / total_excess) if total_excess > 0 else 0.0
            precision = excess / m_v
            rows.append(
                {
                    "dimension": dim,
                    "value": value,
                    "lift": round(min(lift, MAX_LIFT), 2),
                    "share": round(m_v / m_inc, 3),
                    "baseline_share": round(bm / m_base, 3) if m_base > 0 else 0.0,
                    "flagged": round(m_v, 3),
                    "events": n_v,
                    "excess": round(excess, 3),
                    "score": round(explained * precision, 4),
                    "_rank": (explained * precision, excess),
                }
            )
    order = {d: i for i, d in enumerate(dims)}
    # Unrounded score; on a tie the value explaining more (the broader one) first.
    rows.sort(key=lambda r: (-r["_rank"][0], -r["_rank"][1], order[r["dimension"]], r["value"]))
    for r in rows:
        del r["_rank"]
    return rows


def _totals(events: Sequence[Event], mass: Mass) -> tuple[float, int]:
    return sum(mass.weight(e.data) for e in events), len(events)


def _tally(events: Sequence[Event], mass: Mass, getters: list) -> list[dict[str, tuple[int, float]]]:
    """Per dimension: value → (events, mass)."""
    counts: list[dict[str, list]] = [defaultdict(lambda: [0, 0.0]) for _ in getters]
    for e in events:
        w = mass.weight(e.data)
        for i, get in enumerate(getters):
            value = get(e.data)
            if value is None or isinstance(value, dict | list):
                continue
            cell = counts[i][_text(value)]
            cell[0] += 1
            cell[1] += w
    return [{k: (c[0], c[1]) for k, c in d.items()} for d in counts]


def merge_aliases(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Values that cover the same events with the same anomaly mass (a prompt template and
    the one feature that uses it) are one finding: the first in rank keeps the row, the
    others are listed in its ``same_as``."""
    merged: list[dict[str, Any]] = []
    first: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        key = (row["events"], row["flagged"], row["excess"])
        kept = first.get(key)
        if kept is not None:
            kept["same_as"].append({"dimension": row["dimension"], "value": row["value"]})
            continue
        row = {**row, "same_as": []}
        first[key] = row
        merged.append(row)
    return merged


def _text(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


SHIFT_SPAN_MS = 30 * 60_000


def value_shift(population: Sequence[Event], mass: Mass, until: int) -> Callable[[str, str, int], float | None]:
    """``shift(dimension, value, t)``: did the value start to misbehave at ``t``? 1 − 1/lift of
    its anomaly rate in the 30 minutes after ``t`` (up to ``until``) over the 30 minutes before
    (ratio metrics: per event, the earlier rate shrunk towards the population's; volume: per
    unit of time); 0 when it did not rise; None when the log has nothing before ``t`` to
    compare with. ``population``: sorted by time."""
    times = [e.ts for e in population]

    def shift(dim: str, value: str, t: int) -> float | None:
        if not times or times[0] >= t:
            return None
        get = getter(tuple(dim.split(".")))
        lo, mid = bisect_left(times, t - SHIFT_SPAN_MS), bisect_left(times, t)
        after_to = max(t + 1, min(t + SHIFT_SPAN_MS, until))
        hi = bisect_left(times, after_to)
        sums = []
        for part in (population[lo:mid], population[mid:hi]):
            n = m = n_all = m_all = 0.0
            for e in part:
                w = mass.weight(e.data)
                n_all, m_all = n_all + 1, m_all + w
                if _text(get(e.data)) == value:
                    n, m = n + 1, m + w
            sums.append((n, m, n_all, m_all))
        (bn, bm, bn_all, bm_all), (an, am, _, _) = sums
        if bn_all == 0:
            return None
        if an == 0 or am == 0:
            return 0.0
        if mass.mode == RATIO:
            r_all = bm_all / bn_all
            before = (bm + PSEUDO_EVENTS * r_all) / (bn + PSEUDO_EVENTS)
            after = am / an
        else:
            unit = bm_all / bn_all if bm_all else am / an
            before = max(bm, unit) / max(1, t - max(t - SHIFT_SPAN_MS, times[0]))
            after = am / (after_to - t)
        if before <= 0:
            return 1.0
        return max(0.0, 1.0 - before / after)

    return shift
