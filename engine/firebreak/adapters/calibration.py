"""Calibrate rules on a team's own traffic: `firebreak check --events FILE --false-per-day N`.

A sample of ordinary traffic (no incident in it that the team wants paged) tells what a rule
costs in false incidents: every incident the engine opens over it is one the team would have
triaged for nothing. For each rule this says:

- **what it does before its reference is complete** (`reference_text`): a fixed limit judges
  from the first event; `Kx population` from the first step with other groups in the window;
  `Kx baseline(D)` not before a group has been seen for the window + D (its own past), and
  until then that group is not judged at all;
- **its expected false incidents a day** on the sample: incidents opened ÷ the days of the
  sample after the rule's warm-up (window + baseline span + `for`: before it the rule cannot
  fire, so counting them would flatter it);
- when that is over the budget, **the least change that meets it**, found by replaying the
  sample through the rule alone with a stricter setting, one rung of a ladder at a time:
  a stricter confidence for a rule `with C% confidence` (99.9% … 99.99999%), else a higher
  limit for `>` (1.25×, 1.5×, 2×, 3×, 5× its threshold, K of `Kx baseline` or of
  `Kx population`) or a lower one for `<` (0.95× … 0.5×). Nothing here is fitted to a
  benchmark: the ladder is fixed, the traffic is the team's.

The sample must be long enough to mean something: a day after the warm-up at least gives a
rate; a shorter one is reported with its length, and a rule that opened nothing on a short
sample is "0 on N hours", not "0 a day". The same caution as any rate from few events: one
incident in a day is an estimate of 1 a day with a wide interval.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

from firebreak.core import Engine, Event
from firebreak.core.events import format_duration
from firebreak.dsl import CompiledRule
from firebreak.records import RecordKind

DAY_MS = 86_400_000
CONFIDENCE_LADDER = (0.999, 0.9999, 0.99999, 0.999999, 0.9999999)
RAISE_LADDER = (1.25, 1.5, 2.0, 3.0, 5.0)  # a `>`/`>=` rule's limit times these
LOWER_LADDER = (0.95, 0.9, 0.8, 0.7, 0.5)  # a `<`/`<=` rule's limit times these


@dataclass
class Calibration:
    """One rule against a budget of false incidents a day on the sample."""

    budget: float  # false incidents a day the team accepts from this rule
    judged_ms: int  # of the sample after the rule's warm-up
    per_day: float | None  # incidents opened a day over that (None: nothing to judge)
    verdict: str  # within | over | short (no time after the warm-up)
    suggestion: str = ""  # the clause to write instead, when over and a rung meets the budget
    suggested_per_day: float | None = None
    tried: list[tuple[str, float]] = field(default_factory=list)  # (clause, incidents a day)


def reference_text(rule: CompiledRule) -> str:
    """What the rule compares with, and what it does before that reference exists (warm-up)."""
    if rule.population is not None:
        return (
            "the rest of its groups in the same window (`Kx population`): judged from the first step "
            "with other groups; a group alone has no limit"
        )
    past = f"the group's own past {format_duration(rule.baseline_ms)}{_slices(rule)} (`Kx baseline`)"
    if rule.factor is not None and (rule.warmup_ms or rule.population_fallback or rule.prior is not None):
        return f"{past}; before that " + "; ".join(_cold_start(rule))
    if rule.factor is not None:
        warm = format_duration(rule.window_ms + rule.baseline_ms)
        return (
            f"{past}: a group is not judged "
            f"before it has been seen for {warm} (window + baseline span) with at least {rule.min_events} "
            f"event{'s' if rule.min_events != 1 else ''} in that span; a new model, tenant or user is silent "
            "until then"
        )
    return "a fixed limit: judged from the first event of each group"


def _slices(rule: CompiledRule) -> str:
    """How `baseline(S, median | trimmed P% | seasonal D)` reads the span; "" when pooled."""
    if not rule.slices_every_ms:
        return ""
    window = format_duration(rule.window_ms)
    if rule.trim >= 0.5:
        of = "the median"
    elif rule.trim > 0:
        of = f"the mean, the highest and lowest {rule.trim * 100:g}% cut,"
    else:
        of = "the mean"
    if rule.slices_every_ms == rule.window_ms:
        return f", {of} of its {window} windows"
    return f", {of} of the same {window} every {format_duration(rule.slices_every_ms)} back"


def _cold_start(rule: CompiledRule) -> list[str]:
    """The fallback chain of `baseline(S, warmup D, population, prior P)`, in the order it applies."""
    out = []
    if rule.warmup_ms:
        out.append(
            f"its own history once it covers {format_duration(rule.warmup_ms)} (seen for "
            f"{format_duration(rule.window_ms + rule.warmup_ms)}) with at least {rule.min_events} "
            f"event{'s' if rule.min_events != 1 else ''}"
            + (
                ", tested two-sample against its counts (a short history needs more evidence)"
                if rule.confidence and not rule.slices_every_ms and not rule.keeps_squares
                else ""
            )
        )
    if rule.population_fallback:
        out.append("else the rest of its groups in the same window (as `Kx population`)")
    if rule.prior is not None:
        out.append(f"else the prior {rule.prior:g}, from its first step")
    else:
        out.append("else it is not judged")
    return out


def _variants(rule: CompiledRule) -> list[tuple[str, CompiledRule]]:
    """The ladder's rungs for ``rule``, least change first: (the clause as written, the rule)."""
    if rule.confidence is not None:
        return [
            (f"with {round(c * 100, 8):.10g}% confidence", dataclasses.replace(rule, confidence=c))
            for c in CONFIDENCE_LADDER
            if c > rule.confidence
        ]
    ladder = RAISE_LADDER if rule.op in {">", ">="} else LOWER_LADDER
    out = []
    for m in ladder:
        if rule.population is not None:
            k = rule.population * m
            out.append((f"{_num(k)}x population", dataclasses.replace(rule, population=k)))
        elif rule.factor is not None:
            k = rule.factor * m
            span = f"({format_duration(rule.baseline_ms)})"
            out.append((f"{_num(k)}x baseline{span}", dataclasses.replace(rule, factor=k)))
        elif rule.threshold is not None:
            limit = rule.threshold * m
            if rule.metric.func == "rate" and limit > 1:
                continue
            out.append((f"{rule.op} {_num(limit)}", dataclasses.replace(rule, threshold=limit)))
    return out


def _num(x: float) -> str:
    return f"{round(x, 6):g}"


def opened_by(rule: CompiledRule, events: Sequence[Event], lateness_ms: int) -> int:
    """Incidents ``rule`` alone opens over ``events`` (the Python engine, as the check itself)."""
    engine = Engine((rule,), lateness_ms)
    opened = 0
    for event in events:
        if engine.is_late(event):
            continue
        opened += sum(1 for r in engine.process(event) if r["type"] == RecordKind.OPENED)
    return opened + sum(1 for r in engine.finish() if r["type"] == RecordKind.OPENED)


def calibrate(
    rule: CompiledRule, opened: int, events: Sequence[Event], span_ms: int, budget: float, lateness_ms: int
) -> Calibration:
    """``opened``: the incidents the rule opened over the whole sample (``span_ms`` long)."""
    warmup = rule.window_ms + rule.reference_wait_ms + rule.for_ms
    judged = max(0, span_ms - warmup)
    if judged <= 0:
        return Calibration(budget, 0, None, "short")
    days = judged / DAY_MS
    per_day = opened / days
    out = Calibration(budget, judged, per_day, "within" if per_day <= budget else "over")
    if out.verdict == "within":
        return out
    for clause, variant in _variants(rule):
        rate = opened_by(variant, events, lateness_ms) / days
        out.tried.append((clause, rate))
        if rate <= budget:
            out.suggestion, out.suggested_per_day = clause, rate
            break
    return out


def render(cal: Calibration) -> list[str]:
    """The report's lines for one rule (indented as the traffic report's)."""
    if cal.verdict == "short":
        return ["  false a day: the sample is not longer than the rule's warm-up: nothing to estimate"]
    judged = format_duration(cal.judged_ms)
    head = (
        f"  false a day: {cal.per_day:.2f} ({_count(cal)} over {judged} after the warm-up; budget {_num(cal.budget)})"
    )
    if cal.verdict == "within":
        return [head + ": within"]
    if cal.suggestion:
        return [head, f"  suggest: `{cal.suggestion}` — {cal.suggested_per_day:.2f} a day on this traffic"]
    tried = ", ".join(f"`{c}` {r:.2f}" for c, r in cal.tried) or "nothing to tighten"
    return [head, f"  suggest: no rung of the ladder meets the budget ({tried}): narrow `where`/`by`, or drop it"]


def _count(cal: Calibration) -> str:
    n = round((cal.per_day or 0) * cal.judged_ms / DAY_MS)
    return f"{n} incident{'s' if n != 1 else ''}"
