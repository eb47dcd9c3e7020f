"""Generated logs for investigation tests: one injected incident, its true cause change
event, the synthetic decoys (other services, other times) and hard decoys — a change of
the same kind on another target just before onset, a change on the true target long
before it, and (quality) a change of the same kind on the same service but another
template, just before onset."""

from __future__ import annotations

from dataclasses import dataclass

from firebreak.core import Event, format_ts, validate_event
from firebreak.dsl import load_rules
from firebreak.synthetic import MINUTE, TEMPLATES, GroundTruth, Traffic, scenario

# One rule per category, grouped coarser than the injection where it makes sense, so
# the drill-down has to find the dimension value itself.
RULES = {
    "hallucination": "rule halluc:\n  rate(hallucination) > 2x baseline over 10m min 200 events -> sev2 "
    'contain fallback(model="safe")',
    "data_leakage": "rule leak:\n  rate(pii) > 0.002 over 10m min 300 events -> sev2 contain disable_feature",
    "quality_degradation": "rule quality:\n  avg(scores.quality) < 0.9x baseline over 15m by service min 100 events"
    " -> sev3",
    "adversarial": "rule probing:\n  rate(prompt_injection) > 5x baseline over 10m min 200 events -> sev2",
    "cost": 'rule spend:\n  sum(cost_usd) > 2x baseline over 15m min 100 events -> sev2 notify "#finops"',
}
# (kind, dimension) of the near decoy per category: same kind of change, another target.
NEAR_DECOY = {
    "hallucination": ("model_update", "model", "mistral-large"),
    "data_leakage": ("prompt_change", "tenant", "cyberdyne"),
    "quality_degradation": ("data_pipeline", "prompt_template", "code-review-v1"),
    "adversarial": ("config_change", "service", "code-helper"),
    "cost": ("config_change", "service", "doc-summarizer"),
}


@dataclass
class Case:
    category: str
    truth: GroundTruth
    events: list[Event]
    rules: tuple
    decoys: list[str]  # event ids of the added hard decoys


def build(category: str, seed: int = 1, rate: float = 6.0) -> Case:
    traffic: Traffic = scenario(category, seed=seed, rate=rate)
    truth = traffic.truths[0]
    kind, dim, other = NEAR_DECOY[category]
    extra = [
        {
            "event_id": f"decoy-near-{seed}",
            "ts": format_ts(truth.onset_ts - 3 * MINUTE),
            "type": "change",
            "kind": kind,
            dim: other,
            "description": f"{other}: routine {kind.replace('_', ' ')}",
        },
        {
            "event_id": f"decoy-old-{seed}",
            "ts": format_ts(truth.onset_ts - 100 * MINUTE),
            "type": "change",
            "kind": "config_change",
            truth.dimension: truth.value,
            "description": f"{truth.value}: log level info → debug",
        },
    ]
    if category == "quality_degradation":
        # A sibling: the same kind of change, on the same service, for another of its templates
        # — it shares a dimension with the truth, so only specificity can rank it below.
        service = next(t.service for t in TEMPLATES if t.name == truth.value)
        sibling = next(t.name for t in TEMPLATES if t.service == service and t.name != truth.value)
        extra.append(
            {
                "event_id": f"decoy-sibling-{seed}",
                "ts": format_ts(truth.onset_ts - 4 * MINUTE),
                "type": "change",
                "kind": "data_pipeline",
                "service": service,
                "prompt_template": sibling,
                "description": f"re-index knowledge base behind {sibling}",
            }
        )
    raw = list(traffic.events())
    events = sorted((validate_event(e) for e in raw + extra), key=lambda e: e.ts)
    rules, problems = load_rules({f"{category}.rules": RULES[category]})
    assert not problems, problems
    return Case(category, truth, events, rules, [e["event_id"] for e in extra])
