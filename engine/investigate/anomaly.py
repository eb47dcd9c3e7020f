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

from engine.core.events import Event
from engine.core.window import PERCENTILES
from engine.dsl.compiler import CompiledRule, getter

RATIO, VOLUME = "ratio", "volume"
DEFAULT_QUANTILE = 0.9
DRIFT = 2.0  # the CUSUM reference when the onset window is not above normal: twice normal


@dataclass(frozen=True)
class Mass:
    mode: str  # ratio | volume
    weight: Callable[[dict[str, Any]], float]
    describe: str  # what "anomalous" means here, for the report


def mass_of(rule: CompiledRule, reference: Sequence[Event]) -> Mass:
    """The anomaly mass of events for ``rule``; ``reference``: the baseline period's events
    (numeric metrics take their quantile from it)."""
    func = rule.func
    if func in {"rate", "count"} and rule.arg is not None:
        get_flag = getter(rule.arg)
        return Mass(
            RATIO if func == "rate" else VOLUME,
            lambda d: 1.0 if get_flag(d) is True else 0.0,
            f"flagged {rule.arg[-1]}",
        )
    if func in {"count", "distinct"}:
        return Mass(VOLUME, lambda d: 1.0, "every matching event counts (a volume metric)")
    get = getter(rule.arg)
    field = ".".join(rule.arg)
    if func == "sum":
        return Mass(VOLUME, lambda d: _number(get(d)) or 0.0, f"every event adds its {field} (a volume metric)")
    q = PERCENTILES.get(func, DEFAULT_QUANTILE)
    high = rule.op in {">", ">="}
    values = sorted(v for v in (_number(get(e.data)) for e in reference) if v is not None)
    if not values:
        return Mass(RATIO, lambda d: 0.0, f"{field} beyond normal (no reference values)")
    cut = values[min(len(values) - 1, int((q if high else 1 - q) * len(values)))]

    def beyond(d: dict[str, Any]) -> float:
        v = _number(get(d))
        return 1.0 if v is not None and (v > cut if high else v < cut) else 0.0

    word = "above" if high else "below"
    return Mass(RATIO, beyond, f"{field} {word} {cut:g} (the normal period's worst {round(100 * (1 - q))}%)")


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
