"""What counts as "anomalous" for a rule, and when the anomaly began.

Every rule's metric is made of events. An event's **anomaly mass** is what it adds to
what the rule measures as bad:

- `rate(F)`, `count(F)`: 1 if the event is flagged F, else 0;
- `avg`, `min`, `max`, `pNN` of a field: 1 if the value is beyond the baseline period's
  q-quantile in the rule's direction (q = the percentile for `pNN`, 0.9 otherwise; the
  mirror 1 − q for `<` rules), else 0 — "in the worst tenth of what was normal";
- `count()`, `distinct(x)`: 1 per event; `sum(x)`: the value.

The first two are **ratio** metrics (mass per event: expected mass = events × the
baseline rate); the last are **volume** metrics (mass per unit of time).

The anomaly's start is estimated as a CUSUM change point: of all step boundaries in the
two windows before onset, the one from which the summed (mass − reference) up to onset
is largest. The reference is halfway between the normal mass (the period before) and the
anomalous mass (the window after onset) — the classic CUSUM choice for a
shift between two levels — so isolated flagged events before the change (one PII hit in
a quiet minute) do not pull the start earlier.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from firebreak.core.events import Event
from firebreak.dsl.compiler import CompiledRule, getter
from firebreak.dsl.metrics import SUM, Accumulates

RATIO, VOLUME = "ratio", "volume"
DEFAULT_QUANTILE = 0.9
DRIFT = 2.0  # the CUSUM reference when the onset window is not above normal: twice normal


@dataclass(frozen=True)
class Mass:
    mode: str  # ratio | volume
    weight: Callable[[dict[str, Any]], float]
    describe: str  # what "anomalous" means here, for the report
    # What the rule averages, signed so that higher is worse (avg/min/max/pNN: the value
    # itself, not whether it is beyond a cut: a slope shows in the values long before they
    # cross the normal period's quantile); None: the weight.
    signal: Callable[[dict[str, Any]], float | None] | None = None


def mass_of(rule: CompiledRule, reference: Sequence[Event]) -> Mass:
    """The anomaly mass of events for ``rule``; ``reference``: the baseline period's events
    (numeric metrics take their quantile from it)."""
    kind = rule.metric
    if kind.accumulates is Accumulates.FLAGGED:
        get_flag = getter(rule.arg)
        return Mass(
            RATIO if kind.rate else VOLUME,
            lambda d: 1.0 if get_flag(d) is True else 0.0,
            f"flagged {rule.arg[-1]}",
        )
    if kind.accumulates is Accumulates.EVENTS or kind.accumulates is Accumulates.DISTINCT:
        return Mass(VOLUME, lambda d: 1.0, "every matching event counts (a volume metric)")
    get = getter(rule.arg)
    field = ".".join(rule.arg)
    if kind is SUM:
        return Mass(VOLUME, lambda d: _number(get(d)) or 0.0, f"every event adds its {field} (a volume metric)")
    q = kind.quantile if kind.quantile is not None else DEFAULT_QUANTILE
    high = rule.op in {">", ">="}
    values = sorted(v for v in (_number(get(e.data)) for e in reference) if v is not None)
    if not values:
        return Mass(RATIO, lambda d: 0.0, f"{field} beyond normal (no reference values)")
    cut = values[min(len(values) - 1, int((q if high else 1 - q) * len(values)))]

    def beyond(d: dict[str, Any]) -> float:
        v = _number(get(d))
        return 1.0 if v is not None and (v > cut if high else v < cut) else 0.0

    def signal(d: dict[str, Any]) -> float | None:
        v = _number(get(d))
        return None if v is None else v if high else -v

    word = "above" if high else "below"
    return Mass(RATIO, beyond, f"{field} {word} {cut:g} (the normal period's worst {round(100 * (1 - q))}%)", signal)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def change_point(
    mass: Mass,
    events: Sequence[Event],
    step_ms: int,
    search_from: int,
    until: int,
    reference: Sequence[Event],
    reference_ms: int,
    level: tuple[int, int],
) -> int:
    """The step boundary in [search_from, until) from which the cumulative excess of
    ``events`` (sorted by time) over what ``reference`` (a period of ``reference_ms``)
    predicts is largest; ``until − step`` if no suffix has any excess. ``level``: the period
    whose mass is the anomalous level (the window after onset: at onset the window still
    holds mostly normal traffic when detection was quick)."""
    normal = sum(mass.weight(e.data) for e in reference)
    recent = [e for e in events if level[0] <= e.ts < level[1]]
    anomalous = sum(mass.weight(e.data) for e in recent)
    if mass.mode == RATIO:
        low = normal / len(reference) if reference else 0.0
        high = anomalous / len(recent) if recent else 0.0
        rate = (low + high) / 2 if high > low else DRIFT * low
    else:
        low = normal * step_ms / reference_ms if reference_ms > 0 else 0.0
        high = anomalous * step_ms / max(1, level[1] - level[0])
        per_step = (low + high) / 2 if high > low else DRIFT * low
    start = search_from - search_from % step_ms
    steps = max(1, -(-(until - start) // step_ms))
    excess = [0.0] * steps
    counts = [0] * steps
    for e in events:
        if start <= e.ts < until:
            i = (e.ts - start) // step_ms
            excess[i] += mass.weight(e.data)
            counts[i] += 1
    for i in range(steps):
        excess[i] -= rate * counts[i] if mass.mode == RATIO else per_step
    best, best_at, running = 0.0, None, 0.0
    for i in range(steps - 1, -1, -1):
        running += excess[i]
        if running > best:
            best, best_at = running, i
    if best_at is None:
        return max(start, until - step_ms)
    return start + best_at * step_ms


def first_anomalous(mass: Mass, events: Sequence[Event], since: int) -> Event | None:
    """The first event at or after ``since`` that carries anomaly mass."""
    for e in events:
        if e.ts >= since and mass.weight(e.data) > 0:
            return e
    return None


@dataclass(frozen=True)
class SlopeFit:
    """The best broken-stick fit of a series: flat until ``start``, then rising linearly."""

    start: int  # ms: the step boundary where the rise begins
    slope_sse: float  # its sum of squared errors
    step_sse: float  # the best flat-then-flat (a step) fit's
    noise: float  # the residual variance per observation of the slope fit

    @property
    def is_slope(self) -> bool:
        """The slope explains the series clearly better than any step does."""
        return self.noise > 0 and (self.step_sse - self.slope_sse) / self.noise >= SLOPE_EVIDENCE


SLOPE_EVIDENCE = 6.0  # how many residual variances better the slope must fit than a step
MIN_SIDE_STEPS = 3  # a fit needs this many steps on each side of its break


def slope_start(mass: Mass, events: Sequence[Event], step_ms: int, lo: int, hi: int) -> SlopeFit | None:
    """Segmented (piecewise-linear) regression of the anomaly signal over the steps of [lo, hi):
    of all break points τ, the one whose fit — level a before τ, a + s·(t − τ) after, s > 0 —
    has the least squared error, against the best step (level a before τ, b > a after).

    Ratio metrics regress each event's signal (the flag; the value itself for avg/min/max/pNN),
    so steps weigh by their events; volume metrics regress each step's total mass. Computed
    from prefix sums: O(steps). None when the range is too short or has no events."""
    start = lo - lo % step_ms
    steps = -(-(hi - start) // step_ms)
    if steps < 2 * MIN_SIDE_STEPS + 1:
        return None
    get = mass.signal or mass.weight
    n = [0.0] * steps
    s = [0.0] * steps
    q = [0.0] * steps
    for e in events:
        if start <= e.ts < hi:
            y = mass.weight(e.data) if mass.mode != RATIO else get(e.data)
            if y is None:
                continue
            i = (e.ts - start) // step_ms
            n[i] += 1
            s[i] += y
            q[i] += y * y
    if mass.mode != RATIO:  # one observation per step: its total
        n, q = [1.0] * steps, [v * v for v in s]
    total_n = sum(n)
    if total_n < 2 * MIN_SIDE_STEPS + 1:
        return None
    # Suffix sums from i: Σn, Σn·i, Σn·i², Σs, Σs·i.
    p0, p1, p2, r0, r1 = ([0.0] * (steps + 1) for _ in range(5))
    for i in range(steps - 1, -1, -1):
        p0[i], p1[i], p2[i] = p0[i + 1] + n[i], p1[i + 1] + n[i] * i, p2[i + 1] + n[i] * i * i
        r0[i], r1[i] = r0[i + 1] + s[i], r1[i + 1] + s[i] * i
    big_n, big_s, big_q = p0[0], r0[0], sum(q)
    best_slope: tuple[float, int] | None = None
    best_step = float("inf")
    for tau in range(MIN_SIDE_STEPS, steps - MIN_SIDE_STEPS):
        a_ = p1[tau] - tau * p0[tau]
        b_ = p2[tau] - 2 * tau * p1[tau] + tau * tau * p0[tau]
        c_ = r1[tau] - tau * r0[tau]
        det = big_n * b_ - a_ * a_
        if det > 0:
            level = (big_s * b_ - a_ * c_) / det
            slope = (big_n * c_ - a_ * big_s) / det
            if slope > 0:
                sse = big_q - (level * big_s + slope * c_)
                if best_slope is None or sse < best_slope[0]:
                    best_slope = (sse, tau)
        n1, n2 = big_n - p0[tau], p0[tau]
        if n1 > 0 and n2 > 0:
            s1, s2 = big_s - r0[tau], r0[tau]
            if s2 / n2 > s1 / n1:
                best_step = min(best_step, big_q - s1 * s1 / n1 - s2 * s2 / n2)
    if best_slope is None:
        return None
    sse, tau = best_slope
    return SlopeFit(start + tau * step_ms, sse, best_step, max(sse, 0.0) / max(1.0, total_n - 3))
