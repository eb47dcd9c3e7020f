"""Drill-down: which dimension values over-represent the anomaly — against their own past
and against the rest of the population.

For every value v of every dimension (model, model_version, prompt_template, tenant,
service, feature, user, and the rule's own `by` fields), over the **scope** — the
incident's group for a grouped rule (what concentrates the anomaly *inside* `service=X`),
the rule's whole population otherwise:

- ``expected``: the mass v would carry if it were normal, the larger of two predictions —
  its **own past** (ratio metrics: its earlier rate per event, shrunk towards the scope's
  with 50 pseudo-events, so a value new in the incident — a new model version — is
  compared with the scope's past; volume metrics: its earlier mass per unit of time, at
  least one of its own events' worth), and the **rest of the population** (the complement:
  the scope's events without v; ratio: their rate per event during the incident, shrunk
  with 50 pseudo-events towards their rate before, itself shrunk towards the scope's current
  rate; volume: their growth since before, shrunk towards the scope's growth). A value every
  event carries has an empty complement: the prediction is its own current rate, its excess
  0 — it explains everything and tells nothing (Adtributor's "no surprise"). A version that
  *replaced* another is compared with the events of the one it replaced; a value new in the
  incident while the whole scope misbehaves (a new version inside a leaking tenant) is
  compared with the rest of the scope now, and carries nothing of its own;
- ``excess`` = v's mass − expected; ``lift`` = mass / expected; ``share`` / ``baseline_share``:
  v's part of the anomaly mass during / before.

Ranked by ``score`` = explained × precision: ``explained`` = v's excess / the scope's whole
excess, ``precision`` = v's excess / v's mass (1 − 1/lift). Both are ratios of the metric's
own unit, so the ranking is unit-free (dollars or cents, flags or tokens); so are the
floors: a value needs **3 events carrying anomaly mass** in the incident, whatever each
weighs, and to explain at least 1% of the scope's excess, to be listed.

**The group itself** (a grouped rule: `service=X`) is scored too, against the rule's other
groups (the same expected mass, its complement = the other groups): its explained is 1 —
the incident *is* its anomaly — so its score is its precision. A change naming only the
group matches it. In the list, values inside the group that explain at least 2/3 of its
excess come first (they say more than the group the rule already named), then the group,
then the other values inside it.

Values covering the same events with the same mass are merged into one row (``same_as``:
a template and the one feature that uses it; the fields of a group).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from firebreak.core.events import Event
from firebreak.dsl.compiler import CompiledRule, getter
from firebreak.investigate.anomaly import RATIO, Mass
from firebreak.investigate.model import Alias, Contributor

DIMENSIONS = ("model", "model_version", "prompt_template", "tenant", "service", "feature", "user")
PSEUDO_EVENTS = 50
MAX_LIFT = 999.0
MIN_EVENTS = 3  # a value needs this many events carrying anomaly mass in the incident to be listed
NOTHING = 1e-9  # relative excess below this is rounding, not excess
MIN_EXPLAINED = 0.01  # a value explaining less of the scope's excess is not listed (noise)


def dimensions_of(rule: CompiledRule) -> tuple[str, ...]:
    extra = tuple(".".join(p) for p in rule.by if ".".join(p) not in DIMENSIONS)
    return DIMENSIONS + extra


@dataclass(frozen=True)
class _Scope:
    """The totals of a scope in the two periods, and what the scores are measured against."""

    mode: str
    n: int  # events during the incident
    m: float  # anomaly mass during the incident
    n0: int  # events before
    m0: float  # mass before
    scale: float  # incident span / baseline span (volume metrics)

    @property
    def rate_before(self) -> float:
        return self.m0 / self.n0 if self.n0 else self.m / self.n if self.n else 0.0

    @property
    def total_excess(self) -> float:
        if self.mode == RATIO:
            return self.m - self.n * self.rate_before
        return self.m - self.m0 * self.scale

    def expected(self, n_v: int, m_v: float, bn: int, bm: float) -> float:
        """What v's mass would be if v were normal: the larger of what its own past and what
        the rest of the scope (its complement, before and during) predict."""
        if self.mode == RATIO:
            past = (bm + PSEUDO_EVENTS * self.rate_before) / (bn + PSEUDO_EVENTS)
            now = self.m / self.n if self.n else 0.0
            # The rest now, shrunk towards the rest before (a version that replaced another is
            # compared with the one it replaced), itself shrunk towards the scope now (a value
            # every event carries, before and during, is compared with itself).
            rest_before = (self.m0 - bm + PSEUDO_EVENTS * now) / (self.n0 - bn + PSEUDO_EVENTS)
            rest = (self.m - m_v + PSEUDO_EVENTS * rest_before) / (self.n - n_v + PSEUDO_EVENTS)
            return n_v * max(past, rest)
        per_event = m_v / n_v if n_v else 0.0
        past = max(bm, per_event) * self.scale
        unit = (self.m0 / self.n0 if self.n0 else per_event) * self.scale
        growth = self.m / (self.m0 * self.scale) if self.m0 > 0 else 1.0
        pseudo = PSEUDO_EVENTS * unit
        c_now, c_past = self.m - m_v, max(0.0, self.m0 - bm) * self.scale
        rest_growth = (c_now + pseudo * growth) / (c_past + pseudo) if c_past + pseudo > 0 else growth
        return past * max(1.0, rest_growth)


def _scope(
    mass: Mass, incident: Sequence[Event], baseline: Sequence[Event], incident_ms: int, baseline_ms: int
) -> _Scope:
    m, n = _totals(incident, mass)
    m0, n0 = _totals(baseline, mass)
    return _Scope(mass.mode, n, m, n0, m0, incident_ms / baseline_ms if baseline_ms > 0 else 1.0)


def rank_contributors(
    rule: CompiledRule,
    mass: Mass,
    incident: Sequence[Event],
    baseline: Sequence[Event],
    incident_ms: int,
    baseline_ms: int,
    skip: frozenset[str] = frozenset(),
) -> list[Contributor]:
    """Every (dimension, value) of the scope (``incident``, ``baseline``: its events in the two
    periods) with positive excess and at least MIN_EVENTS events carrying mass, best first;
    ``skip``: dimensions not ranked (the group's own fields: one value in the scope)."""
    dims = tuple(d for d in dimensions_of(rule) if d not in skip)
    getters = [getter(tuple(d.split("."))) for d in dims]
    inc = _tally(incident, mass, getters)
    base = _tally(baseline, mass, getters)
    scope = _scope(mass, incident, baseline, incident_ms, baseline_ms)
    if scope.m <= 0:
        return []
    total_excess = scope.total_excess
    rows = []
    for i, dim in enumerate(dims):
        for value, (n_v, m_v, k_v) in inc[i].items():
            if k_v < MIN_EVENTS:
                continue
            bn, bm, _ = base[i].get(value, (0, 0.0, 0))
            row = _row(scope, dim, value, n_v, m_v, bn, bm, total_excess)
            if row is not None and row[0].explained >= MIN_EXPLAINED:
                rows.append(row)
    return _sorted(rows, dims)


def rank_group(
    rule: CompiledRule,
    mass: Mass,
    group: dict[str, Any],
    in_group: Callable[[dict[str, Any]], bool],
    incident: Sequence[Event],
    baseline: Sequence[Event],
    incident_ms: int,
    baseline_ms: int,
) -> list[Contributor]:
    """The incident's group as a contributor (one row per field of the group, same numbers):
    scored over the rule's whole population (``incident``, ``baseline``), against the other
    groups; explained = 1, so its score is its precision. Empty for an ungrouped rule, or
    when the group has fewer than MIN_EVENTS events carrying mass."""
    if not group:
        return []
    scope = _scope(mass, incident, baseline, incident_ms, baseline_ms)
    mine = [e for e in incident if in_group(e.data)]
    m_v, n_v = _totals(mine, mass)
    k_v = sum(1 for e in mine if mass.weight(e.data) > 0)
    bm, bn = _totals([e for e in baseline if in_group(e.data)], mass)
    if k_v < MIN_EVENTS or m_v <= 0:
        return []
    rows = []
    for dim, value in group.items():
        row = _row(scope, dim, _text(value), n_v, m_v, bn, bm, None)
        if row is not None:
            rows.append(row[0])
    return rows


def conjunction(
    mass: Mass,
    pairs: Sequence[tuple[str, str]],
    incident: Sequence[Event],
    baseline: Sequence[Event],
    incident_ms: int,
    baseline_ms: int,
) -> float:
    """The score of the events carrying all of ``pairs`` (field, value) at once — what a change
    naming a tenant *and* one of its services changed — scored like a contributor of the scope
    (``incident``, ``baseline``); 0 when it has fewer than MIN_EVENTS events carrying mass."""
    getters = [(getter(tuple(d.split("."))), v) for d, v in pairs]

    def hit(data: dict[str, Any]) -> bool:
        return all(_text(get(data)) == v for get, v in getters)

    mine = [e for e in incident if hit(e.data)]
    if sum(1 for e in mine if mass.weight(e.data) > 0) < MIN_EVENTS:
        return 0.0
    scope = _scope(mass, incident, baseline, incident_ms, baseline_ms)
    m_v, n_v = _totals(mine, mass)
    bm, bn = _totals([e for e in baseline if hit(e.data)], mass)
    row = _row(scope, "", "", n_v, m_v, bn, bm, scope.total_excess)
    return row[0].score if row is not None else 0.0


def _row(
    scope: _Scope, dim: str, value: str, n_v: int, m_v: float, bn: int, bm: float, total_excess: float | None
) -> tuple[Contributor, tuple[float, float]] | None:
    """The row and its unrounded rank (score, excess). ``total_excess``: the scope's; None for
    the group itself (explained = 1)."""
    expected = scope.expected(n_v, m_v, bn, bm)
    excess = m_v - expected
    if excess <= NOTHING * max(1.0, m_v):
        return None
    if total_excess is None:
        explained = 1.0
    else:
        explained = min(1.0, excess / total_excess) if total_excess > 0 else 0.0
    precision = excess / m_v
    lift = m_v / expected if expected > 0 else MAX_LIFT
    row = Contributor(
        dimension=dim,
        value=value,
        lift=round(min(lift, MAX_LIFT), 2),
        share=round(m_v / scope.m, 3) if scope.m > 0 else 0.0,
        baseline_share=round(bm / scope.m0, 3) if scope.m0 > 0 else 0.0,
        flagged=round(m_v, 6),
        events=n_v,
        excess=round(excess, 6),
        explained=round(explained, 3),
        score=round(explained * precision, 4),
    )
    return row, (explained * precision, excess)


def _sorted(rows: list[tuple[Contributor, tuple[float, float]]], dims: Sequence[str]) -> list[Contributor]:
    """Unrounded score first; on a tie the value explaining more (the broader one) first."""
    order = {d: i for i, d in enumerate(dims)}
    rows.sort(key=lambda r: (-r[1][0], -r[1][1], order.get(r[0].dimension, len(order)), r[0].value))
    return [row for row, _ in rows]


DOMINANT = 2 / 3  # a value inside the group explaining this much of its excess ranks above the group
DOMINANT_LIFT = 2.0  # ... when it stands out itself: its mass at least twice what it would carry
MIN_LIFT = 1.1  # a row carrying less than this over what it would carry is no contributor


def combine(group_rows: list[Contributor], inside: list[Contributor]) -> list[Contributor]:
    """The group's own rows and the rows inside it, in one ranking. Rows with no lift (under
    1.1×: a model every event of an attacking user goes to) are not contributors. The values
    inside that explain most of the group's excess (at least 2/3: a template carrying the
    service's anomaly) and stand out themselves (lift at least 2×) come first — they say more
    than the group, which the rule already named; then the group; then the other values
    inside it, by score."""
    inside = [r for r in inside if r.lift >= MIN_LIFT]
    dominant = [r for r in inside if r.explained >= DOMINANT and r.lift >= DOMINANT_LIFT]
    rest = [r for r in inside if r not in dominant]
    return [*dominant, *group_rows, *rest] if group_rows else inside


def _totals(events: Sequence[Event], mass: Mass) -> tuple[float, int]:
    return sum(mass.weight(e.data) for e in events), len(events)


def _tally(events: Sequence[Event], mass: Mass, getters: list) -> list[dict[str, tuple[int, float, int]]]:
    """Per dimension: value → (events, mass, events carrying mass)."""
    counts: list[dict[str, list]] = [defaultdict(lambda: [0, 0.0, 0]) for _ in getters]
    for e in events:
        w = mass.weight(e.data)
        for i, get in enumerate(getters):
            value = get(e.data)
            if value is None or isinstance(value, dict | list):
                continue
            cell = counts[i][_text(value)]
            cell[0] += 1
            cell[1] += w
            cell[2] += w > 0
    return [{k: (c[0], c[1], c[2]) for k, c in d.items()} for d in counts]


def merge_aliases(rows: Sequence[Contributor]) -> list[Contributor]:
    """Values that cover the same events with the same anomaly mass (a prompt template and
    the one feature that uses it) are one finding: the first in rank keeps the row, the
    others are listed in its ``same_as``."""
    kept: dict[tuple, Contributor] = {}
    aliases: dict[tuple, list[Alias]] = {}
    for row in rows:
        key = (row.events, row.flagged, row.excess)
        if key in kept:
            aliases[key].append(Alias(row.dimension, row.value))
        else:
            kept[key], aliases[key] = row, []
    return [replace(row, same_as=tuple(aliases[key])) for key, row in kept.items()]


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
