"""Suspected causes: the change events before the anomaly, ranked.

    score = 0.6 × match + 0.3 × proximity + 0.1 × prior

- **match** (0..1): how well the change's dimensions point where the anomaly concentrates.
  A change is as specific as its most specific dimension: in each hierarchy —
  model_version ⊂ model, prompt_template ⊂ feature ⊂ service, tenant — the most specific
  value the change names stands for it (a data-pipeline change naming a service *and* a
  template changed that template, not the whole service). match = the best contributor
  score (explained × precision, see contributors.py) among those values. A change naming
  none of these dimensions gets 0.3 (it could touch anything); one whose values carry no
  excess gets 0. The match is then weighed by the **shift** at the change: whether that
  value's anomaly rate rose in the 30 minutes after the change against the 30 before
  (1 − 1/lift, contributors.value_shift): × (0.5 + 0.5 × shift). A change long before the
  anomaly on the right target, after which nothing happened, keeps half its match; one
  with no events before it in the log counts as shift 0.5.
- **proximity** (0..1): halves every 30 minutes between the change and the estimated start
  of the anomaly. The start is an estimate: a change up to 2 minutes (or a step) after it
  counts as at the start, and one later still halves every 2 minutes more (a change well
  after the start — rollbacks and fixes land there — is close to 0).
- **prior** (0..1): how often this kind of change causes this category of incident
  (a model update a hallucination spike: 1; a deploy of another service: lower).

When the adversarial signs are present, an **attack** candidate joins the ranking: its
match = the concentration of attack flags in the top users × the part of this incident's
anomaly those users carry (an attack on one tenant during another tenant's leak carries
none of it), or the anomaly's own concentration in a few users; its time = the first
attack-flagged event of the top user, with the same proximity as a change.
Changes are those in [start − lookback, detection].
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from firebreak.core.events import Event, format_duration, format_ts
from firebreak.dsl.compiler import getter
from firebreak.investigate.contributors import DIMENSIONS
from firebreak.investigate.model import Adversarial, Cause, Contributor

W_MATCH, W_PROXIMITY, W_PRIOR = 0.6, 0.3, 0.1
HALF_LIFE_MS = 30 * 60_000
START_TOLERANCE_MS = 2 * 60_000
LATE_HALF_LIFE_MS = 2 * 60_000  # after the tolerance, a later change loses proximity fast
# Hierarchies of dimensions, most specific first: a change stands for its most specific value.
CARRIES = 0.05  # a contributor score under this does not "carry" the anomaly (and needs no shift)
SHIFT_FLOOR = 0.5  # a change after which its value did not misbehave keeps half its match
SHIFT_UNKNOWN = 0.5  # no events before the change to compare with: counted as half a shift
HIERARCHIES = (("model_version", "model"), ("prompt_template", "feature", "service"), ("tenant",))
NO_DIMENSIONS_MATCH = 0.3
PRIORS = {
    "hallucination": {
        "model_update": 1.0,
        "prompt_change": 0.8,
        "data_pipeline": 0.8,
        "config_change": 0.6,
        "deploy": 0.5,
        "attack": 0.4,
    },
    "data_leakage": {
        "prompt_change": 1.0,
        "config_change": 0.8,
        "deploy": 0.7,
        "data_pipeline": 0.7,
        "model_update": 0.5,
        "attack": 0.8,
    },
    "quality_degradation": {
        "data_pipeline": 1.0,
        "model_update": 0.9,
        "prompt_change": 0.9,
        "config_change": 0.7,
        "deploy": 0.6,
        "attack": 0.3,
    },
    "adversarial": {
        "attack": 1.0,
        "prompt_change": 0.5,
        "config_change": 0.5,
        "deploy": 0.4,
        "model_update": 0.4,
        "data_pipeline": 0.3,
    },
    "cost": {
        "config_change": 1.0,
        "model_update": 0.8,
        "prompt_change": 0.8,
        "deploy": 0.6,
        "data_pipeline": 0.5,
        "attack": 0.6,
    },
}
DEFAULT_PRIOR = 0.5


def change_dimensions(change: Event, extra: Sequence[str] = ()) -> dict[str, str]:
    """The dimensions a change names: the standard ones and ``extra`` (the rule's own `by`
    fields, dotted paths allowed); fields that are neither are ignored."""
    dims = {}
    for d in (*DIMENSIONS, *(x for x in extra if x not in DIMENSIONS)):
        value = getter(tuple(d.split(".")))(change.data)
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            dims[d] = str(value)
    return dims


Shift = Callable[[str, str, int], float | None]
Joint = Callable[[list[tuple[str, str]]], float]


@dataclass(frozen=True)
class Findings:
    """What the earlier passes found, that a cause is scored against. ``start``: the estimated
    start of the anomaly; ``contributors``: every ranked (dimension, value); ``shift(dim, value,
    t)``: how much the value's anomaly rate rose at ``t`` (contributors.value_shift);
    ``dimensions``: the contributors' (the rule's `by` fields beyond the standard ones are each
    a hierarchy of their own); ``group``: the incident's (field → value as text);
    ``joint(pairs)``: the contributor score of the events carrying all of ``pairs`` (a change
    naming values in several hierarchies changed where they meet)."""

    start: int
    step_ms: int
    category: str
    contributors: Sequence[Contributor]
    adversarial: Adversarial
    shift: Shift | None = None
    dimensions: Sequence[str] = DIMENSIONS
    group: Mapping[str, str] = field(default_factory=dict)
    joint: Joint | None = None


def rank_causes(changes: Sequence[Event], findings: Findings) -> list[Cause]:
    """``changes``: the change events of the lookback window, each scored; and the attack,
    when the adversarial signs hold. Best first, ranked from 1."""
    extra = tuple(d for d in findings.dimensions if d not in DIMENSIONS)
    chains = HIERARCHIES + tuple((d,) for d in extra)
    scores = {(c.dimension, c.value): c.score for c in findings.contributors}
    priors = PRIORS.get(findings.category, {})
    ranked = []
    for change in changes:
        dims = change_dimensions(change, extra)
        known = [next((d, dims[d]) for d in chain if d in dims) for chain in chains if any(d in dims for d in chain)]
        match, rose, match_why = _match(change.ts, known, scores, findings)
        before = findings.start - change.ts
        proximity, time_why = _proximity(before, findings.step_ms)
        kind = str(change.data.get("kind"))
        description = str(change.data.get("description", ""))
        why = f"{match_why}; {time_why}"
        ranked.append(
            _candidate(
                change.event_id,
                kind,
                change.ts,
                before,
                dims,
                description,
                match,
                proximity,
                priors.get(kind, DEFAULT_PRIOR),
                why,
                rose,
            )
        )
    attack = _attack(findings, priors)
    if attack is not None:
        ranked.append(attack)
    ranked.sort(key=lambda c: (-c.score, -c.proximity, c.event_id))
    return [replace(c, rank=i) for i, c in enumerate(ranked, start=1)]


def _match(
    ts: int, known: list[tuple[str, str]], scores: dict[tuple[str, str], float], findings: Findings
) -> tuple[float, float | None, str]:
    """(match, shift, why) of a change at ``ts`` naming ``known`` (its most specific value per
    hierarchy)."""
    if not known:
        return NO_DIMENSIONS_MATCH, None, "names no dimension (could touch anything)"
    joint = findings.joint
    target = _target(known, findings.group)
    if target is None:  # names another group of the rule
        best, match = known[0], 0.0
    elif len(target) == 1:
        best, match = target[0], scores.get(target[0], 0.0)
        if match == 0 and joint is not None:  # unlisted: a value the whole group carries?
            match = joint(target)
    else:  # what it changed is where its values meet (a tenant's one service)
        best = min(target, key=lambda dv: scores.get(dv, 0.0))
        match = joint(target) if joint is not None else scores.get(best, 0.0)
    what = " and ".join(f"{d}={v}" for d, v in (target if target and len(target) > 1 else [best]))
    if match < CARRIES:
        return match, None, "none of its dimensions carries the anomaly"
    why = f"{what} carries the anomaly (contributor score {match:.2f})"
    if findings.shift is None:
        return match, None, why
    rose = findings.shift(best[0], best[1], ts)
    match *= SHIFT_FLOOR + (1 - SHIFT_FLOOR) * (SHIFT_UNKNOWN if rose is None else rose)
    if rose is None:
        why += ", and the log starts too late to see whether it rose after the change"
    elif rose >= 0.5:
        why += f", and its anomaly rate rose after the change (shift {rose:.2f})"
    else:
        why += f", but its anomaly rate barely rose after the change (shift {rose:.2f})"
    return match, rose, why


def _attack(findings: Findings, priors: dict[str, float]) -> Cause | None:
    """The attack as a candidate, when the adversarial signs hold."""
    adv = findings.adversarial
    if not adv.suspected or not adv.first_event or adv.first_ts is None:
        return None
    ts = adv.first_ts
    proximity, _ = _proximity(findings.start - ts, findings.step_ms)
    users = ", ".join(u.value for u in adv.top_users[:3]) or ", ".join(u.value for u in adv.anomaly_top_users[:3])
    top_user = (adv.top_users or adv.anomaly_top_users)[0].value
    return _candidate(
        adv.first_event,
        "attack",
        ts,
        findings.start - ts,
        {"user": top_user},
        f"attack by a few users ({users})",
        adv.concentration,
        proximity,
        priors.get("attack", DEFAULT_PRIOR),
        adv.why,
    )


def _target(known: list[tuple[str, str]], group: Mapping[str, str]) -> list[tuple[str, str]] | None:
    """The values a change targets: its most specific value per hierarchy, without the
    incident's own group fields when it names more (inside the group they are implied);
    None when it names another group of the rule."""
    if any(d in group and group[d] != v for d, v in known):
        return None
    inside = [(d, v) for d, v in known if d not in group]
    return inside or known[:1]


def _proximity(before: int, step_ms: int) -> tuple[float, str]:
    """(proximity, why) of something ``before`` ms before the anomaly's start (negative: after)."""
    tolerance = max(step_ms, START_TOLERANCE_MS)
    if before < -tolerance:
        return 0.5 ** ((-before - tolerance) / LATE_HALF_LIFE_MS), f"{format_duration(-before)} after the anomaly began"
    return 0.5 ** (max(0, before) / HALF_LIFE_MS), f"{format_duration(max(0, before))} before the anomaly began"


def _candidate(
    event_id: str,
    kind: str,
    ts: int,
    before: int,
    dims: dict[str, str],
    description: str,
    match: float,
    proximity: float,
    prior: float,
    why: str,
    shift: float | None = None,
) -> Cause:
    """Unranked (rank 0): `rank_causes` numbers them."""
    score = W_MATCH * match + W_PROXIMITY * proximity + W_PRIOR * prior
    return Cause(
        rank=0,
        event_id=event_id,
        kind=kind,
        ts=format_ts(ts),
        score=round(score, 4),
        match=round(match, 4),
        proximity=round(proximity, 4),
        prior=prior,
        shift=None if shift is None else round(shift, 4),
        before_onset_ms=before,
        dimensions=dims,
        description=description,
        why=why,
    )
